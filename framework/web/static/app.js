// The instance page updates itself: it asks for the live part once a second and swaps it in
// when the stored document changed (the server answers 204 when it did not).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var busy = false;
  function tick() {
    if (busy || document.hidden) { return; }
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
