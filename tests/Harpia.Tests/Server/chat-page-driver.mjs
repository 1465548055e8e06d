// Drives the chat page's script (as served by a running Harpia) the way a user would, in Node with a minimal DOM:
// types a message, presses Enter, and (mode "stop") presses Stop once the answer has begun streaming. Prints what
// the page shows, what it fetched and what it stored, as JSON. Used by ChatPageTests; exits 2 when the page hangs.
const [base, mode] = process.argv.slice(2);
const realFetch = globalThis.fetch;
const fetched = [];

class El {
  constructor(id) { this.id = id; this.value = ""; this._text = ""; this.children = []; this.listeners = {}; this.disabled = false; this.className = ""; this.open = false; }
  get classList() { return { add: (c) => { this.className += " " + c; } }; }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(""); }
  set textContent(v) { this._text = String(v); this.children = []; }
  appendChild(c) { this.children.push(c); return c; }
  addEventListener(type, f) { (this.listeners[type] ??= []).push(f); }
  dispatch(type, init = {}) { for (const f of this.listeners[type] || []) f({ preventDefault() {}, ...init }); }
  requestSubmit() { this.dispatch("submit"); }
  scrollIntoView() {}
  querySelector(selector) {
    const cls = selector.slice(1);
    const find = (el) => { for (const c of el.children) { if (c.className.split(" ").includes(cls)) return c; const r = find(c); if (r) return r; } return null; };
    return find(this);
  }
}
const elements = new Map();
const el = (id) => { if (!elements.has(id)) elements.set(id, new El(id)); return elements.get(id); };
class MemoryStorage { constructor() { this.m = new Map(); } getItem(k) { return this.m.has(k) ? this.m.get(k) : null; } setItem(k, v) { this.m.set(k, String(v)); } }
const local = new MemoryStorage(), session = new MemoryStorage();
globalThis.window = { localStorage: local, sessionStorage: session };
globalThis.document = { getElementById: el, createElement: () => new El(null) };
globalThis.fetch = (url, options) => { fetched.push(String(url)); return realFetch(new URL(url, base), options); };

const html = await (await realFetch(base + "/chat", { headers: { Accept: "text/html" } })).text();
const script = await (await realFetch(base + "/chat.js")).text();
for (const m of html.matchAll(/<input id="([^"]+)"[^>]*?value="([^"]*)"/g)) el(m[1]).value = m[2];
new Function(script)();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(condition, what) {
  for (let i = 0; i < 3000; i++) { if (condition()) return; await sleep(10); }
  console.error("timed out waiting for " + what);
  process.exit(2);
}
const assistant = () => el("log").children.filter((c) => c.className.includes("assistant")).at(-1);

el("input").value = "Hi";
el("input").dispatch("keydown", { key: "Enter", shiftKey: false });
await waitFor(() => el("send").disabled, "the request to start");
if (mode === "stop") {
  await waitFor(() => assistant() && assistant().querySelector(".body").textContent.length > 0, "the first streamed text");
  el("stop-btn").dispatch("click");
}
await waitFor(() => !el("send").disabled, "the answer to end");
console.log(JSON.stringify({
  bubbles: el("log").children.map((c) => ({ cls: c.className, text: c.querySelector(".body").textContent, meta: c.querySelector(".meta")?.textContent ?? null })),
  fetched,
  stored: JSON.parse(local.getItem("harpia.messages") || "[]"),
}));
