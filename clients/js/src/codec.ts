// How application values become WebSocket frames and back. JSON travels in text frames;
// MessagePack in binary frames, through a codec the application brings (the package has no
// runtime dependency), e.g. `msgpackCodec(await import('@msgpack/msgpack'))`.

export type Frame = string | Uint8Array;

export interface Codec {
  /** A name for logs and errors. */
  readonly name: string;
  encode(value: unknown): Frame;
  /** `data` is a string for a text frame, bytes for a binary one. */
  decode(data: Frame): unknown;
}

const utf8 = /* @__PURE__ */ new TextDecoder();

/** JSON in text frames (the default). A binary frame is decoded as UTF-8 JSON. */
export const jsonCodec: Codec = {
  name: 'json',
  encode: (v) => JSON.stringify(v),
  decode: (d) => JSON.parse(typeof d === 'string' ? d : utf8.decode(d)),
};

/** No encoding: strings go as text frames, bytes as binary frames, and come back as they are. */
export const rawCodec: Codec = {
  name: 'raw',
  encode: (v) => {
    if (typeof v === 'string' || v instanceof Uint8Array) return v;
    throw new TypeError('rawCodec sends strings and Uint8Arrays only');
  },
  decode: (d) => d,
};

/** The two functions of a MessagePack library, e.g. the module `@msgpack/msgpack`. */
export interface MsgpackLike {
  encode(value: unknown): Uint8Array;
  decode(data: Uint8Array): unknown;
}

/** MessagePack in binary frames. A text frame (a gateway's or a JSON reply) is decoded as JSON. */
export function msgpackCodec(lib: MsgpackLike): Codec {
  return {
    name: 'msgpack',
    encode: (v) => lib.encode(v),
    decode: (d) => (typeof d === 'string' ? JSON.parse(d) : lib.decode(d)),
  };
}
