// The inspector's only script: while a job runs, refresh the parts of the page marked data-live.
"use strict";

(function () {
  const period = Number(document.body.dataset.poll || 0);
  if (!period) {
    return;
  }

  async function refresh() {
    let response;
    try {
      response = await fetch(window.location.href, { headers: { Accept: "text/html" } });
    } catch (error) {
      return true; // the server is away for a moment: try again next time
    }
    if (!response.ok) {
      return response.status >= 500;
    }
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const node of document.querySelectorAll("[data-live]")) {
      const twin = fresh.querySelector(`[data-live="${node.dataset.live}"]`);
      if (twin) {
        node.replaceWith(document.importNode(twin, true));
      }
    }
    return Boolean(fresh.body.dataset.poll);
  }

  async function loop() {
    if (await refresh()) {
      window.setTimeout(loop, period);
    }
  }

  window.setTimeout(loop, period);
})();
