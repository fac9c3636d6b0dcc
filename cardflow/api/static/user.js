// The user page (/users/{uid}): the profile as readable JSON, its recent events (when the API has
// a warehouse), every per-user view drawn with the dashboard's widgets, and a sample of profiles.
"use strict";

const uid = decodeURIComponent(location.pathname.replace(/^\/users\/?/, ""));

async function get(path) {
  const response = await fetch(q(path));
  if (response.status === 401 || response.status === 403) {
    askToken(response.status === 403 ? "this token lacks the read scope" : (token ? "invalid token" : ""));
    throw new Error("needs a token");
  }
  return {status: response.status, body: await response.json()};
}

async function showSample() {
  const {status, body} = await get("/v1/profiles?sample=20");
  const box = document.getElementById("sample");
  box.replaceChildren(...(status === 200 && body.uids.length
    ? body.uids.map((u) => el("a", {href: userLink(u), text: u}))
    : [el("span", {class: "muted", text: status === 200 ? "no profiles yet" : body.message})]));
}

async function showUser() {
  document.getElementById("user-title").textContent = uid;
  document.title = `cardflow: ${uid}`;
  const profile = await get(`/v1/profiles/${encodeURIComponent(uid)}`);
  const json = document.getElementById("profile-json");
  if (profile.status !== 200) {
    json.textContent = profile.body.message || `HTTP ${profile.status}`;
    json.classList.add("error");
    setStatus("down", profile.status === 404 ? "no such user" : "error");
    return;
  }
  json.textContent = JSON.stringify(profile.body.profile, null, 2);
  const views = await get(`/v1/users/${encodeURIComponent(uid)}/views${location.search}`);
  const grid = document.getElementById("cards");
  grid.replaceChildren(...(views.body.views || []).map((v) => el("section", {class: "card", "data-view": v.name},
    el("h2", {text: v.title}),
    ...(v.error ? [el("div", {class: "error", text: v.error})] : v.widgets.map(widget)))));
  const events = await get(`/v1/users/${encodeURIComponent(uid)}/events?limit=20`);
  if (events.status === 200) {
    document.getElementById("events").hidden = false;
    document.getElementById("events-body").replaceChildren(table(["time", "event", "properties"],
      events.body.events.map((e) => [new Date(e.ts).toISOString().replace("T", " ").slice(0, 19), e.event,
                                     JSON.stringify(e.properties)])));
  }
  setStatus("live", "loaded");
}

async function startUser() {
  try {
    await showSample();
    if (uid) await showUser();
    else setStatus("live", "pick a user");
  } catch (err) {
    if (String(err.message) !== "needs a token") setStatus("down", String(err.message || err));
  }
}

startUser();
