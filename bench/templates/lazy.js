/* Work for what lies below the first screen starts only once that screen is drawn: after the load event
   and the next frame. lazy.near(elements, callback) then calls callback(element) once an element comes
   within a screen height of the view (IntersectionObserver), and callback(element, true) for those still
   waiting when the page is printed. lazy.nextFrame(step) runs step after the next frame is drawn. */
var lazy = (function () {
  "use strict";
  function nextFrame(step) { requestAnimationFrame(function () { setTimeout(step, 0); }); }
  function afterFirstScreen(step) {
    if (document.readyState === "complete") { nextFrame(step); } else {
      window.addEventListener("load", function () { nextFrame(step); });
    }
  }
  function near(elements, callback) {
    var waiting = Array.prototype.slice.call(elements);
    function take(element, now) {
      var i = waiting.indexOf(element);
      if (i >= 0) { waiting.splice(i, 1); callback(element, now); }
    }
    window.addEventListener("beforeprint", function () {
      waiting.slice().forEach(function (element) { take(element, true); });
    });
    afterFirstScreen(function () {
      if (!("IntersectionObserver" in window)) { waiting.slice().forEach(function (e) { take(e, false); }); return; }
      var observer = new IntersectionObserver(function (entries) {
        entries.forEach(function (entry) {
          if (entry.isIntersecting) { observer.unobserve(entry.target); take(entry.target, false); }
        });
      }, {rootMargin: "100% 0px"});
      waiting.forEach(function (element) { observer.observe(element); });
    });
  }
  return {near: near, nextFrame: nextFrame};
})();
