// The public API as the console uses it: the caller's key, problem documents,
// and Server-Sent Events from /chat. Nothing here has access a client lacks.

const KEY_STORAGE = "finetune-console.api-key";

export class ApiError extends Error {
  // `problem` is the service's RFC 9457 document (or one made up for a
  // network failure, which never reached the service).
  constructor(problem, status, retryAfter) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.problem = problem;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export const session = {
  key: sessionStorage.getItem(KEY_STORAGE),
  authDisabled: false,
  // Called when the service refuses the key after sign-in (revoked, rotated).
  onUnauthorized: null,

  remember(key) {
    this.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
  },

  forget() {
    this.key = null;
    sessionStorage.removeItem(KEY_STORAGE);
  },
};

async function readProblem(response) {
  const type = response.headers.get("content-type") || "";
  const text = await response.text();
  if (type.includes("json")) {
    try {
      const body = JSON.parse(text);
      if (body && typeof body === "object") return { status: response.status, ...body };
    } catch {
      // fall through: show what came back
    }
  }
  return {
    status: response.status,
    title: response.statusText || `HTTP ${response.status}`,
    detail: text.slice(0, 500) || "The service answered without a problem document.",
  };
}

function retryAfterSeconds(response) {
  const value = Number(response.headers.get("retry-after"));
  return Number.isFinite(value) && value > 0 ? value : undefined;
}

// Every call goes through here. `key: null` sends no Authorization header (the
// start-up probe that finds out whether the service wants a key at all).
export async function call(path, options = {}) {
  const { method = "GET", json, body, signal, stream = false, headers: extra = {} } = options;
  const key = "key" in options ? options.key : session.key;
  const headers = new Headers({ Accept: "application/json, application/problem+json", ...extra });
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let payload = body;
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    payload = JSON.stringify(json);
  }
  if (stream) headers.set("Accept", "text/event-stream, application/problem+json");
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(
      {
        title: "The service could not be reached",
        detail: `${error.message}. Check the connection and try again.`,
      },
      0,
    );
  }
  if (!response.ok) {
    const problem = await readProblem(response);
    if (response.status === 401 && key && session.key === key && session.onUnauthorized) {
      session.onUnauthorized(problem);
    }
    throw new ApiError(problem, response.status, retryAfterSeconds(response));
  }
  if (stream) return response;
  if (response.status === 204) return null;
  return response.json();
}

// Follows `has_more`/`after` until `max` items are in hand (lists are newest first).
export async function listAll(path, { limit = 100, max = 500, signal } = {}) {
  const found = [];
  let after = null;
  for (;;) {
    const join = path.includes("?") ? "&" : "?";
    const query = `${join}limit=${limit}${after ? `&after=${encodeURIComponent(after)}` : ""}`;
    const page = await call(path + query, { signal });
    found.push(...page.data);
    if (!page.has_more || found.length >= max || page.data.length === 0) {
      return { data: found, more: page.has_more };
    }
    after = page.data[page.data.length - 1].id;
  }
}

// The `data:` payloads of an event stream, as they arrive.
export async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        break;
      }
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
    }
  } finally {
    // A reader that stops early (Stop, an error) closes the request too.
    if (!finished) await reader.cancel().catch(() => {});
  }
}
