// Progressive enhancement only: every page works without this script.
// A button with `data-copy="<id>"` copies the text of the element with that id.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
});
// Copy buttons are shown only where the script runs.
for (const button of document.querySelectorAll("button[data-copy][hidden]")) button.hidden = false;
// A rollout still going (`data-done="false"`) is fetched again until every gateway runs
// it (every second, then less often; for five minutes at most); the server renders each
// state.
async function follow(element) {
  for (let i = 0; i < 80 && element.dataset.done !== "true"; i++) {
    await new Promise((resolve) => setTimeout(resolve, i < 20 ? 1000 : 5000));
    const response = await fetch(element.dataset.live, { credentials: "same-origin" });
    if (!response.ok) return;
    const holder = document.createElement("div");
    holder.innerHTML = await response.text();
    const next = holder.firstElementChild;
    if (!next) return;
    element.replaceWith(next);
    element = next;
  }
}
for (const element of document.querySelectorAll("[data-live][data-done='false']")) follow(element);
