// Live topology: poll the stack's status and set each node's status class. Plain JS.
"use strict";
(function () {
  const box = document.getElementById("topology");
  if (!box) return;
  const url = box.dataset.statusUrl;
  const classes = ["status-complete", "status-in-progress", "status-failed", "status-absent"];
  const badge = document.getElementById("stack-status");
  let delay = 1500;
  async function poll() {
    try {
      const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (r.ok) {
        const data = await r.json();
        for (const node of box.querySelectorAll("g.node")) {
          const cls = data.nodes[node.dataset.address] || "status-absent";
          if (!node.classList.contains(cls)) {
            node.classList.remove(...classes);
            node.classList.add(cls);
          }
        }
        if (badge && data.status) {
          badge.textContent = data.status;
          badge.classList.remove(...classes);
          const s = data.status;
          badge.classList.add(s.endsWith("_FAILED") ? "status-failed" :
            s.endsWith("_IN_PROGRESS") ? "status-in-progress" :
            s.endsWith("_COMPLETE") && !s.startsWith("DELETE") ? "status-complete" : "status-absent");
        }
        delay = data.status.endsWith("_IN_PROGRESS") ? 1000 : 4000;
      }
    } catch (e) { delay = 5000; }
    setTimeout(poll, delay);
  }
  setTimeout(poll, 500);
})();
