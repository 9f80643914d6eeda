// mlbook ui: small behaviours of the runs table (no inline scripts: the CSP forbids them).
"use strict";
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target.id === "pick-all") {
    for (const box of document.querySelectorAll('input[name="runs"][form="pick"]')) {
      box.checked = target.checked;
    }
  }
});
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.classList.contains("column-picker")) {
    // keep the order of the columns already shown, then add the newly ticked ones
    const value = form.querySelector("#cols-value");
    const before = value.value ? value.value.split(",") : [];
    const ticked = [...form.querySelectorAll("input[data-col]:checked")].map((b) => b.dataset.col);
    const kept = before.filter((name) => ticked.includes(name));
    value.value = kept.concat(ticked.filter((name) => !kept.includes(name))).join(",");
  }
  if (form.id === "pick" && !document.querySelector('input[name="runs"][form="pick"]:checked')) {
    event.preventDefault();
    alert("Tick one or more runs first (two or more to compare).");
  }
}, true);
