// Live operation log from the API's event stream (Server-Sent Events). Text only, never HTML.
"use strict";
(function () {
  const log = document.getElementById("log");
  if (!log) return;
  const status = document.getElementById("op-status");
  const errorLine = document.getElementById("op-error");
  const classes = ["status-complete", "status-in-progress", "status-failed", "status-absent"];
  const terminal = ["COMPLETE", "FAILED", "CANCELLED"];
  function line(text, cls) {
    const li = document.createElement("li");
    li.textContent = text;
    if (cls) li.className = cls;
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
  }
  function setStatus(s) {
    status.textContent = s;
    status.classList.remove(...classes);
    status.classList.add(s === "COMPLETE" ? "status-complete" : s === "FAILED" || s === "CANCELLED"
      ? "status-failed" : s === "IN_PROGRESS" ? "status-in-progress" : "status-absent");
  }
  const source = new EventSource(log.dataset.eventsUrl, { withCredentials: true });
  source.addEventListener("operation", (ev) => {
    const d = JSON.parse(ev.data);
    const t = (d.time || "").slice(11, 19);
    line(`${t}  operation ${d.action} ${d.status}`, "operation");
    setStatus(d.status);
    if (d.error && d.error.message) errorLine.textContent = d.error.message;
    if (terminal.includes(d.status)) {
      source.close();
      log.dataset.done = "yes";
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
      if (d.status === "COMPLETE" && document.getElementById("drift-report") === null
          && d.action === "DRIFT") setTimeout(() => location.reload(), 300);
    }
  });
  source.addEventListener("resource", (ev) => {
    const d = JSON.parse(ev.data);
    const t = (d.time || "").slice(11, 19);
    const took = d.elapsed !== undefined ? ` (${d.elapsed}s)` : "";
    const err = d.error ? `: ${d.error}` : "";
    const cls = d.status === "FAILED" ? "failed" : d.status === "COMPLETE" ? "complete" : "";
    line(`${t}  ${d.address} (${d.type}) ${d.action}_${d.status}${took}${err}`, cls);
  });
  source.onerror = () => {
    if (log.dataset.done === "yes") source.close();
  };
})();
