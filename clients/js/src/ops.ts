// Gateway ops (docs/PROTOCOL.md, "Channels" and "Token refresh"): frames the gateway answers
// itself. Recognised, as the gateway does, by an exact prefix: a text frame starting with
// `{"wsgate":"`, or a binary MessagePack map whose first key is "wsgate". They are encoded in the
// codec's format when it is MessagePack (the gateway answers in the format an op came in), else
// as JSON text.

import type { Codec, Frame } from './codec.js';

export type Op = Record<string, unknown> & { wsgate: string };

const MARK = '{"wsgate":"';
// fixstr of 6 bytes, then "wsgate"
const MP_KEY = [0xa6, 0x77, 0x73, 0x67, 0x61, 0x74, 0x65];

/** True for a frame that carries the op marker (a text frame, or a binary MessagePack map). */
export function isOp(data: Frame): boolean {
  if (typeof data === 'string') return data.startsWith(MARK);
  if (data.length < 9 || data[0] < 0x81 || data[0] > 0x8f) return false;
  for (let i = 0; i < 7; i++) if (data[i + 1] !== MP_KEY[i]) return false;
  return true;
}

/** Ops travel as MessagePack with a MessagePack codec, as JSON text otherwise. */
export function encodeOp(codec: Codec, op: Op): Frame {
  return codec.name === 'msgpack' ? codec.encode(op) : JSON.stringify(op);
}

/** Decodes a frame isOp() accepted; null when it is not an object with a string `wsgate`. */
export function decodeOp(codec: Codec, data: Frame): Op | null {
  let v: unknown;
  try {
    v = typeof data === 'string' ? JSON.parse(data) : codec.name === 'msgpack' ? codec.decode(data) : undefined;
  } catch {
    return null;
  }
  return v && typeof v === 'object' && typeof (v as Op).wsgate === 'string' ? (v as Op) : null;
}

/** Standard base64 (a JSON binary publication's `data_b64`) to bytes. */
export function fromBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The `exp` claim (seconds) of a JWT, when it can be read; tokens are opaque otherwise. */
export function jwtExp(token: string): number | null {
  try {
    const p = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(p + '==='.slice((p.length + 3) % 4))).exp;
    return typeof exp === 'number' && exp > 0 ? exp : null;
  } catch {
    return null;
  }
}
