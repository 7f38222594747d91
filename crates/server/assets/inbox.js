// Countersign inbox: keyboard shortcuts and reject-option prompts. No build step; htmx does the
// requests and the live updates (SSE).
(function () {
  "use strict";
  var selectedHref = null;

  function items() { return Array.prototype.slice.call(document.querySelectorAll("#items .item")); }

  function mark() {
    items().forEach(function (li) { li.classList.toggle("selected", li.dataset.href === selectedHref); });
  }

  function open(li) {
    if (!li) return;
    selectedHref = li.dataset.href;
    mark();
    var link = li.querySelector("a");
    link.focus({ preventScroll: false });
    link.click();
  }

  function move(step) {
    var list = items();
    if (list.length === 0) return;
    var at = list.findIndex(function (li) { return li.dataset.href === selectedHref; });
    var next = at < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, at + step));
    open(list[next]);
  }

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
  }

  function pendingRequest() {
    var req = document.getElementById("request");
    return req && req.dataset.pending === "true" ? req : null;
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var dialog = document.getElementById("keys");
    if (e.key === "Escape" && typing(document.activeElement)) { document.activeElement.blur(); return; }
    if (typing(e.target)) return;
    var req = pendingRequest();
    switch (e.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "Enter": {
        var sel = items().find(function (li) { return li.dataset.href === selectedHref; });
        if (sel && document.activeElement === document.body) open(sel); else return;
        break;
      }
      case "a":
        if (!req) return;
        if (req.dataset.kind === "approval") {
          var approve = document.getElementById("approve");
          if (approve) approve.click();
        } else {
          var text = document.getElementById("answer-text");
          if (text) text.focus();
        }
        break;
      case "r":
        if (!req || req.dataset.kind !== "approval") return;
        var comment = document.getElementById("reject-comment");
        var first = document.querySelector("form.reject input[type=radio]");
        (first || comment).focus();
        break;
      case "/": {
        var search = document.getElementById("search") || document.getElementById("f-q");
        if (search) search.focus();
        break;
      }
      case "?":
        if (dialog) { if (dialog.open) dialog.close(); else dialog.showModal(); }
        break;
      default:
        return;
    }
    e.preventDefault();
  });

  // Picking a reject or response option puts its prompt_fill in the text box, editable only when
  // the option is interactive.
  document.addEventListener("change", function (e) {
    var radio = e.target;
    if (!radio.matches || !radio.matches("form.decide input[type=radio][name=option]")) return;
    var box = radio.form.querySelector("textarea");
    if (!box) return;
    box.value = radio.dataset.fill || "";
    box.readOnly = radio.dataset.interactive !== "true" && box.value !== "";
  });

  document.addEventListener("click", function (e) {
    var li = e.target.closest && e.target.closest("#items .item");
    if (li) { selectedHref = li.dataset.href; mark(); }
    if (e.target.id === "keys-button") {
      var dialog = document.getElementById("keys");
      if (dialog) dialog.showModal();
    }
  });

  // Edited arguments must be a JSON object before an approval is sent (the server checks again).
  function kwargsProblem(form) {
    var box = form.querySelector("#approve-kwargs");
    if (!box) return null;
    try {
      var value = JSON.parse(box.value);
      if (value === null || typeof value !== "object" || Array.isArray(value)) return "The arguments must be a JSON object.";
      return null;
    } catch (err) {
      return "The arguments are not valid JSON: " + err.message;
    }
  }

  function checkKwargs(e, form) {
    if (!form || !form.matches || !form.matches("form.approve")) return;
    var problem = kwargsProblem(form);
    var shown = form.querySelector("#kwargs-error");
    if (shown) { shown.hidden = !problem; shown.textContent = problem || ""; }
    if (problem) {
      e.preventDefault();
      var details = form.querySelector("details.edit-args");
      if (details) details.open = true;
    }
  }

  document.addEventListener("htmx:beforeRequest", function (e) { checkKwargs(e, e.detail.elt); });
  document.addEventListener("submit", function (e) { checkKwargs(e, e.target); });

  // The list is replaced when requests arrive or leave: keep the selection.
  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.detail.target && e.detail.target.id === "pending") mark();
    if (e.detail.target && e.detail.target.id === "detail") {
      var req = document.getElementById("request");
      if (req) { selectedHref = req.dataset.href; mark(); }
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var req = document.getElementById("request");
    if (req) { selectedHref = req.dataset.href; mark(); }
  });
})();
