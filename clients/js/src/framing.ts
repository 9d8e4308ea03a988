// The `wsgate.v1+seq` framing (docs/PROTOCOL.md, "Resume after reconnect"): every frame from the
// gateway starts with a header line, `<q>\n` (sequenced), `\n` (a reply to this connection) or
// `wsgate\n` followed by a JSON control object.

import type { Frame } from './codec.js';

export type Parsed =
  | { kind: 'data'; seq: number | null; body: Frame }
  | { kind: 'control'; control: Record<string, unknown> }
  | { kind: 'bad'; why: string };

const utf8 = /* @__PURE__ */ new TextDecoder();

export function parseSeqFrame(data: Frame): Parsed {
  let head: string;
  let body: Frame;
  if (typeof data === 'string') {
    const nl = data.indexOf('\n');
    if (nl < 0) return { kind: 'bad', why: 'frame without a header line' };
    head = data.slice(0, nl);
    body = data.slice(nl + 1);
  } else {
    const nl = data.indexOf(10);
    if (nl < 0 || nl > 32) return { kind: 'bad', why: 'binary frame without a header line' };
    head = String.fromCharCode.apply(null, Array.from(data.subarray(0, nl)));
    body = data.subarray(nl + 1);
  }
  if (head === '') return { kind: 'data', seq: null, body };
  if (head === 'wsgate') {
    try {
      const c = JSON.parse(typeof body === 'string' ? body : utf8.decode(body));
      if (c && typeof c === 'object' && typeof c.type === 'string') return { kind: 'control', control: c };
    } catch {
      /* reported below */
    }
    return { kind: 'bad', why: 'unreadable control frame' };
  }
  if (!/^\d{1,16}$/.test(head)) return { kind: 'bad', why: `bad header line "${head.slice(0, 20)}"` };
  const seq = Number(head);
  if (!Number.isSafeInteger(seq)) return { kind: 'bad', why: 'sequence number above 2^53' };
  return { kind: 'data', seq, body };
}
