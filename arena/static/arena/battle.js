// The rater's battle page: one WebSocket, two panes (a and b), votes, reveal, reconnect.
(function () {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  // Named side-by-side mode (viewers, admins) runs the same flow on its own socket and saved battle.
  const named = $("#battle").dataset.mode === "named";
  const socketPath = named ? "/ws/battle/named/" : "/ws/battle/";
  const storageKey = named ? "arena-named-battle" : "arena-battle";
  const state = { battle: null, texts: { a: "", b: "" }, status: { a: "idle", b: "idle" }, seq: { a: 0, b: 0 },
                  socket: null,
                  closed: false, retry: 0, voted: false, hasTurn: false, over: false };
  const panes = { a: $("#pane-a .answer"), b: $("#pane-b .answer") };
  const statusEls = { a: $("#pane-a .status"), b: $("#pane-b .status") };
  const titles = { a: $("#pane-a .title"), b: $("#pane-b .title") };
  const voteButtons = Array.from(document.querySelectorAll("button[data-vote]"));
  const stopButton = $("#stop");
  const regenerateButton = $("#regenerate");

  function show(message, isError) {
    const el = $("#message");
    el.textContent = message || "";
    el.className = isError ? "error" : "info";
  }
  function running() {
    return ["a", "b"].some((s) => state.status[s] === "queued" || state.status[s] === "streaming");
  }
  function updateControls() {
    stopButton.disabled = !running();
    regenerateButton.disabled = !state.hasTurn || state.voted || state.over;
  }
  function renderSide(side) {
    panes[side].innerHTML = ArenaMarkdown.render(state.texts[side]);
    statusEls[side].textContent = { idle: "", queued: "waiting…", streaming: "answering…", done: "finished",
                                    failed: "failed", stopped: "stopped" }[state.status[side]] || "";
    updateControls();
  }
  function setTitles(names) {
    ["a", "b"].forEach((s) => {
      // textContent: a name is never interpreted as HTML
      titles[s].textContent = names ? `Model ${s.toUpperCase()}: ${names[s]}` : `Model ${s.toUpperCase()}`;
    });
  }
  function setVoting(enabled) {
    voteButtons.forEach((b) => { b.disabled = !enabled; });
  }
  function addPromptToHistory(text) {
    const li = document.createElement("li");
    li.textContent = text;  // textContent: never interpreted as HTML
    $("#prompts").appendChild(li);
  }
  function resetPanes() {
    ["a", "b"].forEach((s) => { state.texts[s] = ""; state.status[s] = "idle"; renderSide(s); });
    $("#prompts").innerHTML = "";
    $("#reveal").hidden = true;
    $("#reveal").innerHTML = "";
    setVoting(false);
    state.voted = false;
    state.hasTurn = false;
    state.over = false;
    setTitles(null);
    updateControls();
  }

  function send(frame) {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(frame));
      return true;
    }
    show("Reconnecting…", true);
    return false;
  }

  function applyState(msg) {
    state.battle = msg.battle;
    sessionStorage.setItem(storageKey, msg.battle);
    resetPanes();
    if (msg.names) setTitles(msg.names);
    state.hasTurn = msg.turns.length > 0;
    state.over = msg.status !== "active";
    msg.turns.forEach((turn) => addPromptToHistory(turn.prompt));
    const last = msg.turns[msg.turns.length - 1];
    // Multi-turn: each pane shows its side's latest answer; earlier prompts are listed above.
    state.seq = { a: 0, b: 0 };
    if (last) {
      ["a", "b"].forEach((s) => {
        state.texts[s] = last[s].text; state.status[s] = last[s].status; state.seq[s] = last[s].seq || 0;
        renderSide(s);
      });
    }
    setVoting(msg.can_vote);
    if (msg.status === "voted") { state.voted = true; show("This battle already has a vote. Start a new battle."); }
    if (msg.status === "failed") { show("A side failed in this battle. Start a new battle.", true); }
    if (last && msg.status === "active" && (last.a.status === "stopped" || last.b.status === "stopped")) {
      show("Stopped. Regenerate the answers, or start a new battle.");
    }
    updateControls();
  }

  const handlers = {
    state: applyState,
    turn(msg) {
      state.seq = { a: 0, b: 0 };
      addPromptToHistory(msg.prompt);
      state.hasTurn = true;
      ["a", "b"].forEach((s) => { state.texts[s] = ""; state.status[s] = "queued"; renderSide(s); });
      setVoting(false);
      show("");
    },
    delta(msg) {
      if (msg.seq !== state.seq[msg.side] + 1) {
        // A batch went missing on the way: take the battle as it stands instead of guessing.
        if (state.battle) send({ type: "resume", battle: state.battle });
        return;
      }
      state.seq[msg.side] = msg.seq;
      state.texts[msg.side] += msg.text;
      // The last batch of a stopped side may arrive after the stop was announced.
      if (state.status[msg.side] !== "stopped") state.status[msg.side] = "streaming";
      renderSide(msg.side);
    },
    stopped(msg) {
      state.status[msg.side] = "stopped";
      renderSide(msg.side);
      setVoting(false);
      if (!running()) show("Stopped. Regenerate the answers, or start a new battle.");
    },
    regenerated() {
      // The old answers are replaced: nothing of them may stay next to the new text.
      state.seq = { a: 0, b: 0 };
      ["a", "b"].forEach((s) => { state.texts[s] = ""; state.status[s] = "queued"; renderSide(s); });
      setVoting(false);
      show("Regenerating…");
    },
    notice(msg) { show(msg.message, false); },
    done(msg) { state.status[msg.side] = "done"; renderSide(msg.side); },
    failed(msg) {
      state.status[msg.side] = "failed";
      renderSide(msg.side);
      statusEls[msg.side].textContent = msg.message;
      setVoting(false);
      state.over = true;
      updateControls();
      show("A side failed, so this battle cannot be voted on. Start a new battle.", true);
    },
    ready() { if (!state.voted) { setVoting(true); show("Both answers are in: which is better?"); } },
    reveal(msg) {
      state.voted = true;
      setVoting(false);
      updateControls();
      const box = $("#reveal");
      box.innerHTML = "";
      ["a", "b"].forEach((s) => {
        const info = msg.sides[s];
        const div = document.createElement("div");
        div.className = "revealed";
        div.dataset.side = s;
        const speed = info.ttft_ms != null ? ` · first token ${Math.round(info.ttft_ms)} ms` : "";
        const perToken = info.tpot_ms != null ? ` · ${info.tpot_ms.toFixed(1)} ms/token` : "";
        div.textContent = `Model ${s.toUpperCase()}: ${info.name} (${info.organisation || "unknown"}; preset ${info.preset})${speed}${perToken}`;
        box.appendChild(div);
      });
      box.hidden = false;
      show("Thanks for your vote! Press N for a new battle.");
    },
    error(msg) { show(msg.message, true); updateControls(); },
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${socketPath}`);
    state.socket = socket;
    socket.onopen = () => {
      state.retry = 0;
      show("");
      const saved = sessionStorage.getItem(storageKey);
      if (saved) send({ type: "resume", battle: saved });
      document.body.dataset.connected = "true";
    };
    socket.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      (handlers[msg.type] || (() => {}))(msg);
    };
    socket.onclose = () => {
      document.body.dataset.connected = "false";
      if (state.closed) return;
      state.retry = Math.min(state.retry + 1, 6);
      show("Connection lost; reconnecting…", true);
      setTimeout(connect, 250 * state.retry);
    };
  }

  function newFrame() {
    if (!named) return { type: "new" };
    return { type: "new", model_a: Number($("#pick-a").value), model_b: Number($("#pick-b").value) };
  }
  function newBattle() {
    sessionStorage.removeItem(storageKey);
    resetPanes();
    state.battle = null;
    send(newFrame());
  }
  function stop() {
    if (stopButton.disabled) return;
    stopButton.disabled = true;
    send({ type: "stop" });
  }
  function regenerate() {
    if (regenerateButton.disabled) return;
    regenerateButton.disabled = true;
    setVoting(false);
    send({ type: "regenerate" });
  }
  function vote(winner) {
    if (voteButtons.every((b) => b.disabled)) return;
    setVoting(false);
    send({ type: "vote", winner: winner });
  }

  $("#prompt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const box = $("#prompt");
    const text = box.value;
    if (!text.trim()) { show("Type a prompt first.", true); return; }
    if (state.voted || (named && !state.battle)) {
      // A finished battle takes no more prompts: the next prompt opens a new battle.
      sessionStorage.removeItem(storageKey);
      resetPanes();
      send(newFrame());
    }
    if (send({ type: "prompt", text: text })) { box.value = ""; setVoting(false); }
  });
  voteButtons.forEach((b) => b.addEventListener("click", () => vote(b.dataset.vote)));
  $("#new-battle").addEventListener("click", newBattle);
  stopButton.addEventListener("click", stop);
  regenerateButton.addEventListener("click", regenerate);
  if (named) {
    $("#pick-form").addEventListener("submit", (event) => { event.preventDefault(); newBattle(); });
  }
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { stop(); return; }
    if (event.target.tagName === "TEXTAREA" || event.target.tagName === "INPUT") return;
    const keys = { "1": "model_a", "2": "model_b", "3": "tie", "4": "tie (bothbad)" };
    if (keys[event.key]) vote(keys[event.key]);
    if (event.key === "n" || event.key === "N") newBattle();
  });
  connect();
})();
