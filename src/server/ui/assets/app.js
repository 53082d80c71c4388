// Deckhand's one script: the live log of a running job (/jobs/N). Everything it shows is
// set as text (textContent), never parsed as HTML. Without it the page still works: a
// reload shows the new lines.
"use strict";
(function () {
  var log = document.getElementById("log");
  if (!log || log.dataset.live !== "1" || !window.EventSource) return;
  var body = log.tBodies[0];
  var step = log.dataset.step || null;
  var follow = true;
  window.addEventListener("scroll", function () {
    follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  });
  function cell(tag, text, cls) {
    var c = document.createElement(tag);
    c.textContent = text;
    if (cls) c.className = cls;
    return c;
  }
  function add(l) {
    if (l.step !== step) {
      var h = document.createElement("tr");
      h.className = "step";
      var th = cell("th", "▶ " + l.step);
      th.colSpan = 2;
      h.appendChild(th);
      body.appendChild(h);
      step = l.step;
    }
    var r = document.createElement("tr");
    r.id = "l" + l.id;
    r.className = l.stream === "stderr" ? "err" : l.stream === "note" ? "note" : "out";
    r.appendChild(cell("td", String(l.id), "n"));
    r.appendChild(cell("td", l.line));
    body.appendChild(r);
  }
  function badge(word) {
    var cls = { succeeded: "good", failed: "bad", interrupted: "bad", cancelled: "warn",
      rejected: "warn", expired: "warn", running: "busy", queued: "busy" }[word] || "plain";
    return cell("span", word.replace(/_/g, " "), "badge " + cls);
  }
  var es = new EventSource("/jobs/" + encodeURIComponent(log.dataset.job) +
    "/events?after=" + encodeURIComponent(log.dataset.after));
  es.addEventListener("lines", function (e) {
    var none = document.getElementById("nolog");
    if (none) none.remove();
    var lines = JSON.parse(e.data);
    lines.forEach(add);
    var count = document.getElementById("count");
    if (count) count.textContent = String(Number(count.textContent) + lines.length);
    log.dataset.after = String(body.lastElementChild ? body.lastElementChild.id.slice(1) : log.dataset.after);
    if (follow) window.scrollTo(0, document.body.scrollHeight);
    var state = document.getElementById("state");
    if (state && state.textContent === "queued") state.replaceChildren(badge("running"));
  });
  es.addEventListener("end", function (e) {
    es.close();
    var end = JSON.parse(e.data);
    var state = document.getElementById("state");
    if (state) state.replaceChildren(badge(end.state));
    var rep = document.getElementById("report");
    if (rep && end.title) {
      var tone = { success: "good", danger: "bad", warning: "warn" }[end.tone] || "plain";
      rep.replaceChildren(cell("h2", end.title, "tone-" + tone));
      var dl = document.createElement("dl");
      dl.className = "facts";
      end.fields.forEach(function (f) {
        dl.appendChild(cell("dt", f[0]));
        dl.appendChild(cell("dd", f[1]));
      });
      rep.appendChild(dl);
    }
    log.dataset.live = "0";
  });
})();
