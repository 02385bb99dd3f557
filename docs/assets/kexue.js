// kexue: a click on a figure opens it enlarged in a dialog (Escape, a click or the button close it).
// Without JavaScript the link opens the figure's file. One listener on the document, so it keeps
// working across Material's instant navigation.
document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a.kx-zoom");
  if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  if (typeof HTMLDialogElement === "undefined") return;
  event.preventDefault();
  let dialog = document.querySelector("dialog.kx-lightbox");
  if (!dialog) {
    dialog = document.createElement("dialog");
    dialog.className = "kx-lightbox";
    dialog.setAttribute("aria-label", "Enlarged figure");
    dialog.innerHTML = '<button type="button" aria-label="Close the enlarged figure">×</button><img alt=""><p></p>';
    dialog.addEventListener("click", (e) => { if (e.target === dialog || e.target.closest("button, img")) dialog.close(); });
    document.body.append(dialog);
  }
  const img = link.querySelector("img");
  const caption = link.closest("figure")?.querySelector("figcaption")?.textContent || "";
  dialog.querySelector("img").src = link.href;
  dialog.querySelector("img").alt = img ? img.alt : caption;
  dialog.querySelector("p").textContent = caption;
  dialog.showModal();
});

// Display math and tables wider than their column scroll sideways; make such a box focusable, so
// it can be scrolled with the keyboard too (WCAG 2.1.1). Re-checked after instant navigation and
// resizing.
const kxScrollers = [
  ["article div.arithmatex", "Equation (scrolls sideways)"],
  ["article .md-typeset__scrollwrap", "Table (scrolls sideways)"],
];
function kxScrollableMath() {
  for (const [selector, label] of kxScrollers) {
    for (const box of document.querySelectorAll(selector)) {
      if (box.scrollWidth > box.clientWidth + 1) {
        box.tabIndex = 0;
        box.setAttribute("role", "group");
        box.setAttribute("aria-label", label);
      } else if (box.hasAttribute("tabindex")) {
        box.removeAttribute("tabindex");
      }
    }
  }
}
if (window.document$) window.document$.subscribe(kxScrollableMath);
else document.addEventListener("DOMContentLoaded", kxScrollableMath);
window.addEventListener("resize", kxScrollableMath);
