/**
 * DNS over TCP framing (RFC 1035 4.2.2, RFC 7766): each message follows a
 * 16-bit big-endian length. The reader turns a byte stream, cut anywhere
 * and with any number of messages in one chunk, into whole messages.
 *
 * Memory is bounded by construction: a message that arrives whole in one
 * chunk is a view of that chunk; one that spans chunks is copied into a
 * buffer of exactly its announced length (at most 65,535 bytes), allocated
 * once when the length is known, so bytes are copied once whatever the
 * chunking (no growing concatenation a client could make quadratic).
 * A length of 0 is not a message: the stream is broken there; the messages
 * before it are still returned, nothing after it is read.
 */

export interface DnsFrames {
  /** The whole messages, in order. */
  messages: Buffer[];
  /** A zero length arrived: the stream carries no more messages. */
  broken: boolean;
}

export interface DnsFrameReader {
  /** The messages `chunk` completes. */
  push(chunk: Buffer): DnsFrames;
}

export function createDnsFrameReader(): DnsFrameReader {
  /** The first byte of a length whose second byte has not arrived. */
  let lengthHigh: number | undefined;
  /** The message being filled across chunks, and how much of it has arrived. */
  let partial: Buffer | undefined;
  let filled = 0;
  let broken = false;

  return {
    push(chunk) {
      const messages: Buffer[] = [];
      if (broken) return { messages, broken };
      let at = 0;
      while (at < chunk.length) {
        if (partial === undefined) {
          let length: number;
          if (lengthHigh !== undefined) {
            length = (lengthHigh << 8) | (chunk[at] as number);
            lengthHigh = undefined;
            at += 1;
          } else if (chunk.length - at >= 2) {
            length = chunk.readUInt16BE(at);
            at += 2;
          } else {
            lengthHigh = chunk[at];
            break;
          }
          if (length === 0) {
            broken = true;
            return { messages, broken };
          }
          if (chunk.length - at >= length) {
            messages.push(chunk.subarray(at, at + length));
            at += length;
            continue;
          }
          partial = Buffer.allocUnsafe(length);
          filled = 0;
        }
        const count = Math.min(partial.length - filled, chunk.length - at);
        chunk.copy(partial, filled, at, at + count);
        filled += count;
        at += count;
        if (filled === partial.length) {
          messages.push(partial);
          partial = undefined;
        }
      }
      return { messages, broken };
    },
  };
}

/** `message` with its 16-bit length in front, in one buffer (one write); longer messages are cut at 65,535 bytes. */
export function frameDnsMessage(message: Buffer): Buffer {
  const length = Math.min(message.length, 65_535);
  const framed = Buffer.allocUnsafe(2 + length);
  framed.writeUInt16BE(length, 0);
  message.copy(framed, 2, 0, length);
  return framed;
}
