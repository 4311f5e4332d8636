// The rater's battle page: one WebSocket, two panes (a and b), votes, reveal, reconnect.
(function () {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const state = { battle: null, texts: { a: "", b: "" }, status: { a: "idle", b: "idle" }, socket: null,
                  closed: false, retry: 0, voted: false };
  const panes = { a: $("#pane-a .answer"), b: $("#pane-b .answer") };
  const statusEls = { a: $("#pane-a .status"), b: $("#pane-b .status") };
  const voteButtons = Array.from(document.querySelectorAll("button[data-vote]"));

  function show(message, isError) {
    const el = $("#message");
    el.textContent = message || "";
    el.className = isError ? "error" : "info";
  }
  function renderSide(side) {
    panes[side].innerHTML = ArenaMarkdown.render(state.texts[side]);
    statusEls[side].textContent = { idle: "", queued: "waiting…", streaming: "answering…", done: "finished",
                                    failed: "failed", stopped: "stopped" }[state.status[side]] || "";
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
    sessionStorage.setItem("arena-battle", msg.battle);
    resetPanes();
    msg.turns.forEach((turn) => addPromptToHistory(turn.prompt));
    const last = msg.turns[msg.turns.length - 1];
    // Multi-turn: each pane shows its side's latest answer; earlier prompts are listed above.
    if (last) {
      ["a", "b"].forEach((s) => { state.texts[s] = last[s].text; state.status[s] = last[s].status; renderSide(s); });
    }
    setVoting(msg.can_vote);
    if (msg.status === "voted") { state.voted = true; show("This battle already has a vote. Start a new battle."); }
    if (msg.status === "failed") { show("A side failed in this battle. Start a new battle.", true); }
  }

  const handlers = {
    state: applyState,
    turn(msg) {
      addPromptToHistory(msg.prompt);
      ["a", "b"].forEach((s) => { state.texts[s] = ""; state.status[s] = "queued"; renderSide(s); });
      setVoting(false);
      show("");
    },
    delta(msg) {
      state.texts[msg.side] += msg.text;
      state.status[msg.side] = "streaming";
      renderSide(msg.side);
    },
    done(msg) { state.status[msg.side] = "done"; renderSide(msg.side); },
    failed(msg) {
      state.status[msg.side] = "failed";
      renderSide(msg.side);
      statusEls[msg.side].textContent = msg.message;
      setVoting(false);
      show("A side failed, so this battle cannot be voted on. Start a new battle.", true);
    },
    ready() { if (!state.voted) { setVoting(true); show("Both answers are in: which is better?"); } },
    reveal(msg) {
      state.voted = true;
      setVoting(false);
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
    error(msg) { show(msg.message, true); },
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/battle/`);
    state.socket = socket;
    socket.onopen = () => {
      state.retry = 0;
      show("");
      const saved = sessionStorage.getItem("arena-battle");
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

  function newBattle() {
    sessionStorage.removeItem("arena-battle");
    resetPanes();
    send({ type: "new" });
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
    if (state.voted) {
      // A finished battle takes no more prompts: the next prompt opens a new battle.
      sessionStorage.removeItem("arena-battle");
      resetPanes();
      send({ type: "new" });
    }
    if (send({ type: "prompt", text: text })) { box.value = ""; setVoting(false); }
  });
  voteButtons.forEach((b) => b.addEventListener("click", () => vote(b.dataset.vote)));
  $("#new-battle").addEventListener("click", newBattle);
  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "TEXTAREA" || event.target.tagName === "INPUT") return;
    const keys = { "1": "model_a", "2": "model_b", "3": "tie", "4": "tie (bothbad)" };
    if (keys[event.key]) vote(keys[event.key]);
    if (event.key === "n" || event.key === "N") newBattle();
  });
  connect();
})();
