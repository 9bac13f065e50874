// Typeset the mathematics of the docs with the vendored KaTeX (docs/assets/katex, no CDN).
// pymdownx.arithmatex (generic mode) wraps inline maths as `\(...\)` in `span.arithmatex`
// and display maths as `\[...\]` in `div.arithmatex`; render exactly those elements.
(function () {
  "use strict";
  var options = {
    delimiters: [
      { left: "\\[", right: "\\]", display: true },
      { left: "\\(", right: "\\)", display: false },
    ],
    throwOnError: false,
  };

  function render(root) {
    var elements = root.querySelectorAll(".arithmatex");
    for (var i = 0; i < elements.length; i++) {
      renderMathInElement(elements[i], options);
    }
  }

  if (typeof document$ !== "undefined") {
    // mkdocs-material: re-render after every (instant) page load
    document$.subscribe(function () {
      render(document.body);
    });
  } else {
    document.addEventListener("DOMContentLoaded", function () {
      render(document.body);
    });
  }
})();
