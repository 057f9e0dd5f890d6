// The ipywidgets html-manager typesets every widget label with MathJax 2's API
// (MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])), but the book loads MathJax 3, which
// has no Hub: each label would throw "Cannot read properties of undefined (reading 'Queue')".
// This shim gives whatever object ends up in window.MathJax a Hub.Queue that forwards the
// request to MathJax 3's typesetPromise. It must load before MathJax and the html-manager.
(function () {
  "use strict";
  function queue() {
    for (var i = 0; i < arguments.length; i++) {
      var job = arguments[i];
      if (Array.isArray(job) && job[0] === "Typeset") {
        var el = job[2];
        var mj = window.MathJax;
        if (mj && typeof mj.typesetPromise === "function") {
          mj.typesetPromise(el ? [el] : undefined).catch(function () {});
        }
      }
    }
  }
  var current = window.MathJax;
  function withHub(value) {
    if (value && typeof value === "object" && !value.Hub) {
      Object.defineProperty(value, "Hub", { value: { Queue: queue }, enumerable: false, configurable: true });
    }
    return value;
  }
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); },
  });
  withHub(current);
})();
