// Keyboard for agg's reader: j / k select the next / previous item, o opens it, / goes to search.
// Only an enhancement: every page works without it, by its links.
(function () {
  "use strict";
  var items = Array.prototype.slice.call(document.querySelectorAll("[data-item]"));
  var current = -1;

  function select(index) {
    if (!items.length) return;
    index = Math.max(0, Math.min(items.length - 1, index));
    if (current >= 0) items[current].classList.remove("selected");
    current = index;
    var item = items[current];
    item.classList.add("selected");
    item.scrollIntoView({block: "nearest"});
    var link = item.querySelector("[data-open]");
    if (link) link.focus({preventScroll: true});
  }

  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (event.key === "j") {
      select(current + 1);
    } else if (event.key === "k") {
      select(current < 0 ? 0 : current - 1);
    } else if (event.key === "o" && current >= 0) {
      var link = items[current].querySelector("[data-open]");
      if (!link) return;
      window.location.assign(link.href);
    } else if (event.key === "/") {
      var box = document.querySelector("input[type=search]");
      if (!box) return;
      box.focus();
    } else {
      return;
    }
    event.preventDefault();
  });
})();
