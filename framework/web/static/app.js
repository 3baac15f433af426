// The instance page updates itself: it asks for the live part once a second and swaps it in
// when the stored document changed (the server answers 204 when it did not).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var busy = false;
  function typing() {
    // Someone filling in a form (a signal's payload, a restart's reason) keeps what they typed.
    var active = document.activeElement;
    return active && active.form && live.contains(active.form) && active.tagName !== "BUTTON";
  }
  function tick() {
    if (busy || document.hidden || typing()) { return; }
    busy = true;
    var url = "/workflows/" + encodeURIComponent(live.dataset.id) + "/live?rev=" +
      encodeURIComponent(live.dataset.rev) + "&step=" + encodeURIComponent(live.dataset.step);
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { return r.status === 200 ? r.json() : null; })
      .then(function (data) {
        if (data) {
          live.innerHTML = data.html;
          live.dataset.rev = String(data.revision);
        }
      })
      .catch(function () { /* the server may be restarting: try again at the next tick */ })
      .then(function () { busy = false; });
  }
  setInterval(tick, 1000);
})();
