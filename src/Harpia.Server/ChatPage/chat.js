// Harpia's built-in chat page: streams from this server's own OpenAI route (/v1/chat/completions); every request
// goes to the page's origin. The conversation and settings stay in this browser (localStorage); the API key, when
// the server asks for one, in sessionStorage.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const store = window.localStorage;
  const keyStore = window.sessionStorage;
  let messages = JSON.parse(store.getItem("harpia.messages") || "[]");
  let controller = null;

  const settings = ["system", "temperature", "top-p", "max-tokens", "stop"];
  for (const id of settings) {
    const saved = store.getItem("harpia.setting." + id);
    if (saved !== null) $(id).value = saved;
    $(id).addEventListener("change", () => store.setItem("harpia.setting." + id, $(id).value));
  }
  $("api-key").value = keyStore.getItem("harpia.apiKey") || "";
  $("api-key").addEventListener("change", () => keyStore.setItem("harpia.apiKey", $("api-key").value));

  function save() { store.setItem("harpia.messages", JSON.stringify(messages)); }

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = "msg " + role;
    const body = document.createElement("span");
    body.className = "body";
    body.textContent = text;
    div.appendChild(body);
    if (role === "assistant") {
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy";
      copy.textContent = "Copy";
      copy.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(body.textContent));
      div.appendChild(copy);
    }
    $("log").appendChild(div);
    div.scrollIntoView({ block: "end" });
    return div;
  }

  function render() {
    $("log").textContent = "";
    for (const m of messages) bubble(m.role, m.content);
  }

  function headers() {
    const h = { "Content-Type": "application/json", "Accept": "text/event-stream" };
    const key = $("api-key").value.trim();
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }

  function request() {
    const body = {
      messages: ($("system").value.trim() ? [{ role: "system", content: $("system").value.trim() }] : []).concat(messages),
      stream: true,
      stream_options: { include_usage: true },
      temperature: Number($("temperature").value),
      top_p: Number($("top-p").value),
    };
    // Left blank, the server gives the reply what the context leaves (a fixed default could exceed a small --max-total-tokens).
    if ($("max-tokens").value.trim()) body.max_tokens = Number($("max-tokens").value);
    const stops = $("stop").value.split("\n").filter((s) => s.length > 0);
    if (stops.length) body.stop = stops;
    return body;
  }

  async function generate() {
    const div = bubble("assistant", "");
    const out = div.querySelector(".body");
    const meta = document.createElement("span");
    meta.className = "meta";
    div.appendChild(meta);
    controller = new AbortController();
    $("send").disabled = true; $("regenerate").disabled = true; $("stop-btn").disabled = false;
    $("status").textContent = "generating…";
    const started = performance.now();
    let firstAt = 0, tokens = 0, text = "", finish = null;
    try {
      const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(request()), signal: controller.signal });
      if (response.status === 401) {
        $("settings").open = true;
        throw new Error("The server needs an API key: enter it under Settings.");
      }
      if (!response.ok || !response.body) {
        let message = response.status + " " + response.statusText;
        try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
        throw new Error(message);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("");
          if (!data || data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error);
          if (chunk.usage) tokens = chunk.usage.completion_tokens;
          for (const choice of chunk.choices || []) {
            const piece = choice.delta && choice.delta.content;
            if (piece) {
              if (!firstAt) firstAt = performance.now();
              if (!chunk.usage) tokens++;
              text += piece;
              out.textContent = text;
              div.scrollIntoView({ block: "end" });
            }
            if (choice.finish_reason) finish = choice.finish_reason;
          }
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") { div.classList.add("error"); out.textContent = text + (text ? "\n" : "") + "Error: " + e.message; }
      else finish = "stopped";
    } finally {
      controller = null;
      $("send").disabled = false; $("regenerate").disabled = false; $("stop-btn").disabled = true;
      const seconds = (performance.now() - (firstAt || started)) / 1000;
      meta.textContent = tokens + " tokens" + (seconds > 0 && tokens > 1 ? ", " + (tokens / seconds).toFixed(1) + " tokens/s" : "") + (finish ? " · " + finish : "");
      $("status").textContent = "";
      if (text) { messages.push({ role: "assistant", content: text }); save(); }
    }
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || controller) return;
    messages.push({ role: "user", content: text });
    save();
    bubble("user", text);
    $("input").value = "";
    generate();
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop-btn").addEventListener("click", () => controller && controller.abort());
  $("regenerate").addEventListener("click", () => {
    if (controller) return;
    while (messages.length && messages[messages.length - 1].role === "assistant") messages.pop();
    if (!messages.length) return;
    save(); render(); generate();
  });
  $("new-chat").addEventListener("click", () => { if (controller) controller.abort(); messages = []; save(); render(); });

  fetch("/v1/models", { headers: headers() }).then((r) => r.ok ? r.json() : null)
    .then((m) => { if (m && m.data && m.data[0]) $("model").textContent = m.data[0].id; }).catch(() => {});
  render();
})();
