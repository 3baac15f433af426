// The pages update themselves, without a reload:
// - a workflow's page asks for its live part once a second and swaps it in when the stored
//   document changed (the server answers 204 when it did not); every fifth second it asks
//   anyway while the saga is in flight, so its heartbeat age moves;
// - the list asks for its rows and counts every five seconds (it keeps the rows ticked).
(function () {
  "use strict";
  function typing(root) {
    // Someone filling in a form (a signal's payload, a restart's reason) keeps what they typed.
    var active = document.activeElement;
    return active && active.form && root.contains(active.form) && active.tagName !== "BUTTON" &&
      active.type !== "checkbox";
  }
  // A diagram is drawn no smaller than its own size (its text stays legible); one wider than
  // the page scrolls, to where the saga is now (the node drawn as current).
  function fit(root) {
    root.querySelectorAll(".svg").forEach(function (box) {
      var svg = box.querySelector("svg");
      if (!svg || !svg.viewBox || !svg.viewBox.baseVal || !svg.viewBox.baseVal.width) { return; }
      var w = svg.viewBox.baseVal.width, h = svg.viewBox.baseVal.height;
      var scale = Math.max(Math.min(4 / 3, box.clientWidth / w), 1);
      svg.style.width = (w * scale) + "px";
      svg.style.height = (h * scale) + "px";
      var current = svg.querySelector("g.current");
      if (current) {
        var r = current.getBoundingClientRect(), b = box.getBoundingClientRect();
        box.scrollLeft += (r.left + r.width / 2) - (b.left + box.clientWidth / 2);
      }
    });
  }
  fit(document);
  var live = document.getElementById("live");
  if (live) {
    var busy = false, ticks = 0;
    setInterval(function () {
      ticks += 1;
      if (busy || document.hidden || typing(live)) { return; }
      busy = true;
      var story = document.getElementById("story");
      var moving = story && ["RUNNING", "COMPENSATING", "CANCELLING"].indexOf(story.dataset.status) >= 0;
      var rev = (moving && ticks % 5 === 0) ? "" : live.dataset.rev;
      var url = "/workflows/" + encodeURIComponent(live.dataset.id) + "/live?rev=" +
        encodeURIComponent(rev) + "&step=" + encodeURIComponent(live.dataset.step);
      fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
        .then(function (r) { return r.status === 200 ? r.json() : null; })
        .then(function (data) {
          if (data) {
            live.innerHTML = data.html;
            live.dataset.rev = String(data.revision);
            fit(live);
          }
        })
        .catch(function () { /* the server may be restarting: try again at the next tick */ })
        .then(function () { busy = false; });
    }, 1000);
  }
  var table = document.getElementById("workflows");
  if (table) {
    var rows = document.getElementById("rows");
    var all = document.getElementById("select-all");
    var auto = document.getElementById("auto-refresh");
    var buttons = ["bulk-cancel", "bulk-force", "bulk-restart"].map(function (id) {
      return document.getElementById(id);
    });
    var picked = function () { return rows.querySelectorAll("input.pick:checked"); };
    var update = function () {
      var n = picked().length;
      document.getElementById("selected-count").textContent = n ? n + " selected" : "none selected";
      buttons.forEach(function (b) { b.disabled = n === 0; });
    };
    rows.addEventListener("change", update);
    all.addEventListener("change", function () {
      rows.querySelectorAll("input.pick").forEach(function (box) { box.checked = all.checked; });
      update();
    });
    var refreshing = false;
    setInterval(function () {
      if (refreshing || document.hidden || !auto.checked) { return; }
      refreshing = true;
      var keep = {};
      picked().forEach(function (box) { keep[box.value] = true; });
      fetch(table.dataset.refresh, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
        .then(function (r) { return r.status === 200 ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          rows.innerHTML = data.rows;
          document.getElementById("counts").innerHTML = data.counts;
          rows.querySelectorAll("input.pick").forEach(function (box) { box.checked = !!keep[box.value]; });
          update();
        })
        .catch(function () { /* try again at the next tick */ })
        .then(function () { refreshing = false; });
    }, 5000);
    update();
  }
})();
