// The operator's page: status in, E-STOP / ENABLE (held) / APPROVE out, over one websocket.
"use strict";
const $ = (id) => document.getElementById(id);
const now = () => performance.timeOrigin + performance.now(); // wall-clock ms, sub-ms resolution
let ws = null;
let beating = null; // the 20 Hz dead-man heartbeat while ENABLE is held
let pending = null;

let holdId = 0; // each press of ENABLE is a new hold; the server ignores beats of old ones
let lastPush = 0;
let stopOwed = false; // an E-STOP pressed while disconnected: sent as soon as the socket opens

function send(msg) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(msg));
  return true;
}

const pressed = []; // when each E-STOP was pressed (wall ms): the measured latency starts here
window.qrobotEstops = pressed;

function estop(ev) {
  if (ev) ev.preventDefault();
  const t = now();
  const sent = send({ op: "estop", t: t });
  pressed.push(t);
  release();
  if (sent) {
    $("reply").textContent = "E-STOP sent";
  } else {
    stopOwed = true;
    $("reply").textContent = "E-STOP NOT SENT: the console is disconnected. Use the hardware e-stop.";
  }
}

let asking = null; // while held: ask to enable until it first succeeds, never again in this hold
let state = "";

function hold(ev) {
  ev.preventDefault();
  if (beating || ev.button !== 0) return; // the primary button only
  holdId += 1;
  const id = holdId;
  send({ op: "beat", hold: id });
  beating = setInterval(() => send({ op: "beat", hold: id }), 50);
  $("enable").classList.add("held");
  // a few beats first (enabling needs a live operator), then again while refused and held
  asking = setInterval(() => { if (beating && state === "IDLE") send({ op: "enable" }); }, 300);
}

function release() {
  if (beating) clearInterval(beating);
  if (asking) clearInterval(asking);
  beating = null;
  asking = null;
  $("enable").classList.remove("held");
  send({ op: "release", hold: holdId });
}

function age(v) { return v === null || v === undefined ? "never" : v.toFixed(2) + " s"; }

function show(s) {
  if (s.reply) {
    $("reply").textContent = s.reply + (s.ok ? ": ok" : ": refused: " + s.reason);
    if (s.reply === "enable" && s.ok && asking) { clearInterval(asking); asking = null; }
    return;
  }
  lastPush = performance.now();
  state = s.state;
  const st = $("state");
  st.textContent = s.state;
  st.className = "state " + String(s.state).toLowerCase();
  $("latched").textContent = s.latched ? "latched: " + s.latched : "";
  $("holder").textContent = s.holder || "nobody";
  $("age-operator").textContent = age(s.ages && s.ages.operator);
  $("age-lease").textContent = age(s.ages && s.ages.lease);
  $("age-status").textContent = age(s.age);
  $("speed").textContent = s.speed === null || s.speed === undefined ? "-" : s.speed.toFixed(3) + " m/s";
  $("held").textContent = s.held ? "held" : "released";
  const list = $("rejects");
  list.replaceChildren(...(s.rejects || []).slice().reverse().map((r) => {
    const li = document.createElement("li");
    li.textContent = r; // text, never markup: a reason may quote what a peer sent
    return li;
  }));
  pending = s.pending;
  $("approve").disabled = !pending;
  $("proposal").textContent = pending ? "proposed task:\n" + pending.task + "\ndigest " + pending.digest : (s.approval || "");
  if (s.thumbs) {
    $("thumbs").replaceChildren(...Object.entries(s.thumbs).map(([name, url]) => {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.src = url; img.alt = name;
      const cap = document.createElement("figcaption");
      cap.textContent = name;
      fig.append(img, cap);
      return fig;
    }));
  }
}

function connect() {
  const token = encodeURIComponent(location.hash.slice(1)); // this launch's token, printed by qrobot console
  ws = new WebSocket("ws://" + location.host + "/ws?token=" + token);
  ws.onopen = () => {
    if (stopOwed && send({ op: "estop", t: now() })) {
      stopOwed = false;
      $("reply").textContent = "E-STOP sent (on reconnecting)";
    }
  };
  ws.onmessage = (e) => show(JSON.parse(e.data));
  ws.onclose = () => {
    release();
    $("state").textContent = "console disconnected";
    $("state").className = "state estopped";
    setTimeout(connect, 500);
  };
}

setInterval(() => { // no status for 0.3 s: what the page shows is stale, and it says so
  if (performance.now() - lastPush > 300) { $("state").textContent = "NO STATUS"; $("state").className = "state estopped"; }
}, 100);
$("enable").addEventListener("contextmenu", (e) => e.preventDefault());
$("estop").addEventListener("pointerdown", estop);
$("enable").addEventListener("pointerdown", hold);
for (const ev of ["pointerup", "pointerleave", "pointercancel"]) $("enable").addEventListener(ev, release);
window.addEventListener("blur", release);
document.addEventListener("visibilitychange", () => { if (document.hidden) release(); });
document.addEventListener("keydown", (e) => { if (e.code === "Space") estop(e); });
$("reset").addEventListener("click", () => send({ op: "reset" }));
$("approve").addEventListener("click", () => { if (pending) send({ op: "approve", digest: pending.digest }); });
connect();
