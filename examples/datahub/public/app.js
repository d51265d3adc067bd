// Data Hub page script: Master Chat, Connect/Disconnect and sign-in without
// page reloads.  Failures are shown on the page, never thrown: the release's
// smoke test fails on any browser console error.
"use strict";

async function postJson(url, body) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify(body || {}),
  });
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    data = null;
  }
  if (!res.ok) {
    const reason = data && data.error ? data.error : "HTTP " + res.status;
    throw new Error(reason);
  }
  return data;
}

function showError(el, message) {
  if (!el) return;
  el.textContent = message;
  el.hidden = !message;
}

function appendMessage(list, role, text) {
  const li = document.createElement("li");
  li.dataset.testid = "chat-message";
  li.dataset.role = role;
  li.textContent = text;
  list.appendChild(li);
  list.scrollTop = list.scrollHeight;
}

function setupChat() {
  const box = document.querySelector('[data-testid="master-chat"]');
  if (!box) return;
  const form = box.querySelector("form");
  const input = form.querySelector('input[name="message"]');
  const list = box.querySelector('[data-testid="chat-messages"]');
  const error = box.querySelector('[data-testid="chat-error"]');
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = input.value.trim();
    if (!message) return;
    const button = form.querySelector("button");
    button.disabled = true;
    showError(error, "");
    try {
      const data = await postJson("/api/chat", { message });
      appendMessage(list, "USER", message);
      if (data.reply) {
        appendMessage(list, "ASSISTANT", data.reply);
      } else {
        showError(error, "The assistant did not reply.");
      }
      input.value = "";
    } catch (err) {
      showError(error, "Could not send the message: " + err.message);
    } finally {
      button.disabled = false;
    }
  });
}

function setupConnections() {
  document.querySelectorAll('[data-testid="connection-button"]').forEach((button) => {
    button.addEventListener("click", async () => {
      const card = button.closest('[data-testid="provider-card"]');
      const statusEl = card.querySelector('[data-testid="connection-status"]');
      const action = button.dataset.action;
      button.disabled = true;
      try {
        const data = await postJson("/api/connections/" + button.dataset.provider + "/" + action);
        const connected = data.status === "Connected";
        statusEl.textContent = data.status;
        statusEl.dataset.status = connected ? "CONNECTED" : "NOT_CONNECTED";
        button.dataset.action = connected ? "disconnect" : "connect";
        button.textContent = connected ? "Disconnect" : "Connect";
      } catch (err) {
        statusEl.textContent = "Error: " + err.message;
      } finally {
        button.disabled = false;
      }
    });
  });
}

function setupSignIn() {
  const form = document.querySelector('[data-testid="sign-in"]');
  if (!form) return;
  const error = document.querySelector('[data-testid="sign-in-error"]');
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await postJson("/api/session", { email: form.querySelector('input[name="email"]').value.trim() });
      window.location.reload();
    } catch (err) {
      showError(error, "Sign-in failed: " + err.message);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupChat();
  setupConnections();
  setupSignIn();
  // Marks a page whose script ran to the end (checked by tests/app_spec.lua).
  document.body.dataset.ready = "true";
});
