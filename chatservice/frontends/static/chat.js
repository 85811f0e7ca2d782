// The chat page: one WebSocket to /ws, speaking the frame format's JSON
// (docs/web.md).  Every piece of text from the server is put in the page
// with textContent, never as HTML: nicknames, topics and messages are text.
"use strict";

(function () {
  const log = document.getElementById("log");
  const input = document.getElementById("input");
  const form = document.getElementById("input-form");
  const statusLine = document.getElementById("status");
  const roomTitle = document.getElementById("room");
  const topicLine = document.getElementById("topic");
  const memberList = document.getElementById("member-list");
  const members = document.getElementById("members");
  const toggle = document.getElementById("members-toggle");

  let socket = null;
  let nick = null;          // our nickname, once the server says so
  let token = null;         // the resume token the server gave us
  let room = null;          // the room we are in
  let people = new Set();   // who is in it
  let quitting = false;     // we said /quit: do not reconnect
  let refused = false;      // refused, kicked or banned: do not reconnect
  let resuming = false;     // a /resume is under way
  let hiddenWho = 0;        // /who answers asked by the page itself
  let retry = 1000;         // the next reconnect's delay, in ms

  function localTime(iso) {
    const when = iso ? new Date(iso) : new Date();
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // Append one line; keep the view at the bottom only if it was there.
  function show(kind, parts, iso, history) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
    const line = document.createElement("li");
    line.className = kind + (history ? " history" : "");
    const time = document.createElement("time");
    if (iso) time.dateTime = iso;
    time.textContent = localTime(iso) + " ";
    line.appendChild(time);
    for (const [cls, text] of parts) {
      const span = document.createElement("span");
      if (cls) span.className = cls;
      span.textContent = text;
      line.appendChild(span);
    }
    log.appendChild(line);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function note(text, iso) { show("notice", [["", text]], iso); }

  function setStatus(text, offline) {
    statusLine.textContent = text;
    statusLine.classList.toggle("offline", !!offline);
  }

  function setRoom(name, topic) {
    room = name;
    roomTitle.textContent = name;
    topicLine.textContent = topic || "";
    people = new Set();
    drawMembers();
  }

  function drawMembers() {
    memberList.replaceChildren();
    for (const name of [...people].sort()) {
      const item = document.createElement("li");
      item.textContent = name;
      memberList.appendChild(item);
    }
  }

  function send(frame, body) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(Object.assign({ frame: frame }, body)));
      return true;
    }
    return false;
  }

  function type(text) { return send("INPUT", { text: text }); }

  function askWho() {
    hiddenWho += 1;
    type("/who");
  }

  // "In #room (3): alice, bob (away), carol": the people in our room.
  function readWho(text) {
    const match = /^In (#\S+) \(\d+\)[^:]*: (.*)$/.exec(text.split("\n")[0]);
    if (!match || match[1] !== room) return false;
    people = new Set();
    for (const item of match[2].split(", ")) {
      const name = item.split(" ")[0];
      if (name) people.add(name);
    }
    drawMembers();
    return true;
  }

  function onEvent(e) {
    const h = e.history;
    switch (e.type) {
      case "chat":
        for (const text of e.text.split("\n")) show("chat", [["nick", "<" + e.nick + ">"], ["", " " + text]], e.time, h);
        break;
      case "action":
        show("action", [["", "* " + e.nick + " " + e.text]], e.time, h);
        break;
      case "private":
        show("private", [["", "*" + e.nick + "* " + e.text]], e.time);
        break;
      case "private_sent":
        show("private", [["", "-> *" + e.nick + "* " + e.text]], e.time);
        break;
      case "welcome":
        nick = e.nick;
        input.placeholder = "Message, or /help for the commands";
        setStatus("connected as " + nick);
        setRoom("#lobby", "");
        note(e.text, e.time);
        askWho();
        break;
      case "resume_token":
        token = e.token;
        break;
      case "resumed":
        resuming = false;
        nick = e.nick;
        setStatus("connected as " + nick);
        setRoom(e.room, topicLine.textContent);
        note("Reconnected: " + e.count + " missed line(s) follow.", e.time);
        askWho();
        break;
      case "room":
        setRoom(e.room, e.text);
        note("You are now in " + e.room + "." + (e.text ? " Topic: " + e.text : ""), e.time);
        break;
      case "topic":
        if (e.room === room) topicLine.textContent = e.text;
        note(e.nick + " set the topic of " + e.room + ": " + e.text, e.time);
        break;
      case "join":
        if (e.room === room) { people.add(e.nick); drawMembers(); }
        note(e.nick + " has joined " + e.room, e.time);
        break;
      case "part":
        if (e.room === room) { people.delete(e.nick); drawMembers(); }
        note(e.nick + " has left " + e.room + (e.reason ? " (" + e.reason + ")" : ""), e.time);
        break;
      case "quit":
        people.delete(e.nick); drawMembers();
        note(e.nick + " has left" + (e.reason ? " (" + e.reason + ")" : ""), e.time);
        break;
      case "lost":
        note(e.nick + " lost connection", e.time);
        break;
      case "back":
        note(e.nick + " is back", e.time);
        break;
      case "nick":
        if (people.delete(e.nick)) { people.add(e.new_nick); drawMembers(); }
        if (e.nick === nick) { nick = e.new_nick; setStatus("connected as " + nick); }
        note(e.nick + " is now known as " + e.new_nick, e.time);
        break;
      case "pong":
        note("pong " + e.text, e.time);
        break;
      case "disconnected":
        refused = true;
        note("disconnected: " + e.reason, e.time);
        break;
      case "notice":
        if (readWho(e.text) && hiddenWho > 0) { hiddenWho -= 1; break; }
        // The greeting again, on a reconnection: we have a nickname.
        if (nick && e.text.startsWith("Welcome to chatservice.")) break;
        if (e.text === "Goodbye.") quitting = true;
        for (const text of e.text.split("\n")) note(text, e.time);
        break;
      default:
        if (e.text) note(e.text, e.time);
    }
  }

  function onMessage(message) {
    let m;
    try { m = JSON.parse(message.data); } catch (error) { return; }
    if (m.frame === "HELLO") {
      retry = 1000;
      setStatus(nick ? "reconnecting as " + nick + "…" : "connected: choose a nickname");
      if (nick && token) {
        resuming = true;
        type("/resume " + nick + " " + token);
      } else if (nick) {
        type(nick);
      }
    } else if (m.frame === "EVENT") {
      onEvent(m);
    } else if (m.frame === "ERROR") {
      if (m.code === "refused") refused = true;
      show("error", [["", m.text]]);
      if (resuming) {          // the session is gone: start a new one
        resuming = false;
        token = null;
        type(nick);
      }
    } else if (m.frame === "PING") {
      send("PONG", { token: m.token || "" });
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/ws", "chatservice.v1");
    socket.onmessage = onMessage;
    socket.onclose = function () {
      socket = null;
      if (quitting || refused) {
        setStatus("disconnected", true);
        return;
      }
      setStatus("connection lost; reconnecting in " + Math.round(retry / 1000) + " s", true);
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    if (!type(text)) {
      show("error", [["", "not connected; try again in a moment"]]);
      return;
    }
    input.value = "";
    if (/^\/quit\b/i.test(text)) quitting = true;
    if (!nick) return;
    // The server does not send our own lines back: show them as sent.
    if (/^\/me /i.test(text)) {
      show("action", [["", "* " + nick + " " + text.slice(4)]]);
    } else if (!text.startsWith("/")) {
      for (const line of text.split("\n")) show("chat", [["nick", "<" + nick + ">"], ["", " " + line]]);
    }
  });

  toggle.addEventListener("click", function () { members.classList.toggle("open"); });

  connect();
})();
