// The tip-goal bar (room and studio): filled by the room's goal events.
export function showGoal(root, goal) {
  const box = root.querySelector("[data-goal]");
  if (!box) return;
  if (!goal) {
    box.hidden = true;
    return;
  }
  const percent = Math.min(100, Math.round((100 * goal.progress) / goal.target));
  box.hidden = false;
  box.querySelector("[data-goal-title]").textContent = goal.title;
  box.querySelector("[data-goal-text]").textContent = goal.reached
    ? `reached! (${goal.progress} / ${goal.target})`
    : `${goal.progress} / ${goal.target} tokens`;
  const bar = box.querySelector("[data-goal-bar]");
  bar.setAttribute("aria-valuenow", String(percent));
  box.querySelector("[data-goal-fill]").style.width = `${percent}%`;
}
