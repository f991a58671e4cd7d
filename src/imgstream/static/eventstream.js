// Server-Sent Events read with fetch(): EventSource cannot send an Authorization header, so the
// page reads text/event-stream itself, as the HTML standard's "event stream interpretation"
// says: lines end with CRLF, LF or CR; a blank line dispatches; ":" starts a comment; fields
// are event, data, id and retry; an event cut off by the end of the stream is dropped.

const MAX_BUFFER = 1 << 20; // characters without a line end, or of one event's data

export class EventStreamParser {
  /** onEvent({type, data, lastEventId}) for each event; onRetry(ms) for each valid retry field. */
  constructor({ onEvent, onRetry = () => {}, lastEventId = "" }) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.lastEventId = lastEventId;
    this.buffer = "";
    this.skipLF = false; // the last chunk ended in CR: a LF starting the next belongs to it
    this.type = "";
    this.data = "";
    this.id = lastEventId;
  }

  /** Feed decoded text, in chunks of any size. */
  feed(text) {
    if (this.skipLF && text) {
      if (text[0] === "\n") text = text.slice(1);
      this.skipLF = false;
    }
    this.buffer += text;
    let at;
    while ((at = this.buffer.search(/[\r\n]/)) >= 0) {
      let next = at + 1;
      if (this.buffer[at] === "\r") {
        if (next === this.buffer.length) this.skipLF = true;
        else if (this.buffer[next] === "\n") next += 1;
      }
      const line = this.buffer.slice(0, at);
      this.buffer = this.buffer.slice(next);
      this.line(line);
    }
    if (this.buffer.length > MAX_BUFFER || this.data.length > MAX_BUFFER) throw new Error("event stream line too long");
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return; // a comment (the server's keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data += `${value}\n`;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.onRetry(Number(value));
    // any other field is ignored
  }

  dispatch() {
    this.lastEventId = this.id;
    const { type, data } = this;
    this.type = "";
    this.data = "";
    if (data === "") return;
    this.onEvent({ type: type || "message", data: data.slice(0, -1), lastEventId: this.lastEventId });
  }
}

/** Whether a response is an event stream (Content-Type text/event-stream, parameters aside). */
export function isEventStream(response) {
  const type = response.headers.get("Content-Type") ?? "";
  return type.split(";")[0].trim().toLowerCase() === "text/event-stream";
}

/**
 * Read `response`'s body into `parser` until the stream ends (resolves) or breaks off or is
 * aborted (rejects). Bytes are decoded as UTF-8, as the format demands (a BOM is skipped).
 */
export async function readEventStream(response, parser) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8");
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
    }
    parser.feed(decoder.decode());
  } finally {
    reader.cancel().catch(() => {});
  }
}
