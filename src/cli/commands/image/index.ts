/** `banger image ...`: list, show, build-default, pull, import, build, promote, register, delete, prune, login, logout. */
import type { GroupSpec } from "../../spec.ts";
import {
  buildDefaultSpec,
  dockerfileBuildSpec,
  imageDeleteSpec,
  imagePruneSpec,
  importSpec,
  promoteSpec,
  pullSpec,
  registerSpec,
} from "./build.ts";
import { loginSpec, logoutSpec } from "./login.ts";
import { imageListSpec, imageShowSpec } from "./show.ts";

export const imageGroup: GroupSpec = {
  name: "image",
  describe: "manage the images VMs boot from",
  commands: [
    imageListSpec,
    imageShowSpec,
    buildDefaultSpec,
    pullSpec,
    importSpec,
    dockerfileBuildSpec,
    promoteSpec,
    registerSpec,
    imageDeleteSpec,
    imagePruneSpec,
    loginSpec,
    logoutSpec,
  ],
};
