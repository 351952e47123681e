/** The shape every doctor check has; `runDoctor` runs them in order. */
import type { DoctorCheck } from "../../../protocol/index.ts";

export interface HostCheck {
  /** Names the check when it throws instead of answering. */
  readonly name: string;
  /** One result, or several (the tool check answers once per tool). */
  run(): Promise<DoctorCheck | DoctorCheck[]>;
}
