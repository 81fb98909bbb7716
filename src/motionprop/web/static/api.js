// Calls to the server's HTTP API (docs/app.md). Every error is thrown as an Error with the
// server's one-line reason, for the status bar.

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function check(response) {
  if (response.ok) return response;
  let reason = `${response.status} ${response.statusText}`;
  try { reason = (await response.json()).error || reason; } catch (_) { /* not JSON */ }
  throw new ApiError(reason, response.status);
}

async function postJson(path, body) {
  const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify(body) });
  return check(response);
}

/** Upload an image file (Blob); returns the session {id, width, height, name, working_size, range}. */
export async function createSession(blob, name) {
  const type = blob.type || "image/png";
  const response = await fetch("/api/sessions", { method: "POST", body: blob,
    headers: { "Content-Type": type, "X-Filename": encodeURIComponent(name || "image").slice(0, 200) } });
  return (await check(response)).json();
}

export async function info() { return (await check(await fetch("/api/info"))).json(); }

export async function flow(sid, guidance, options) {
  return (await postJson(`/api/sessions/${sid}/flow`, { guidance, ...options })).json();
}

/** options: {refine: "grabcut", threshold} also returns the refined mask (docs/app.md). */
export async function annotate(sid, positive, negative, options = {}) {
  return (await postJson(`/api/sessions/${sid}/annotate`, { positive, negative, ...options })).json();
}

/** POST that returns a file: resolves to {blob, name} (name from Content-Disposition). */
export async function postFile(path, body) {
  const response = await postJson(path, body);
  const match = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "");
  return { blob: await response.blob(), name: match ? match[1] : "download" };
}

export async function startAnimation(sid, body) {
  return (await postJson(`/api/sessions/${sid}/animate`, body)).json();
}

export async function animationStatus(sid, job) {
  return (await check(await fetch(`/api/sessions/${sid}/animate/${job}`))).json();
}

export async function cancelAnimation(sid, job) {
  return (await check(await fetch(`/api/sessions/${sid}/animate/${job}`, { method: "DELETE" }))).json();
}

export async function animationResult(sid, job) {
  return (await check(await fetch(`/api/sessions/${sid}/animate/${job}/result`))).blob();
}

/**
 * Live queries: at most one request in flight; while one runs, only the newest input is kept
 * and sent when it returns, so the picture follows the pointer without a queue building up.
 * `run(input)` does the request; `show(result, input, since)` draws it (`since`: the time of
 * the oldest input event the result answers, for the latency figure).
 */
export class LiveQuery {
  constructor(run, show, fail) {
    this.run = run; this.show = show; this.fail = fail;
    this.busy = false; this.pending = null; this.pendingSince = 0;
  }

  request(input, since = performance.now()) {
    if (!this.pending) this.pendingSince = since;
    this.pending = input;
    if (!this.busy) this.next();
  }

  /** Forget an input not yet sent (e.g. the guidance became empty). */
  drop() { this.pending = null; }

  async next() {
    if (!this.pending) return;
    const input = this.pending, since = this.pendingSince;
    this.pending = null; this.busy = true;
    try {
      const result = await this.run(input);
      await this.show(result, input, since);  // newer than what is shown, even if a newer input waits
    } catch (error) {
      this.fail(error);
    } finally {
      this.busy = false;
      this.next();
    }
  }

  get idle() { return !this.busy && !this.pending; }
}

/** Offer a Blob as a file download. */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url; a.download = name;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
