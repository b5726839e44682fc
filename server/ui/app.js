// The tidemap web console: the node and its peers (node.js), a key browser
// (keys.js) and a live change feed (feed.js), all from the node's HTTP API
// with the bearer token the user gives (common.js).
import { $, setToken } from "./common.js";
import { restartWatch, startFeed } from "./feed.js";
import { startKeyBrowser } from "./keys.js";
import { refreshStatus, startStatus } from "./node.js";

function useToken(event) {
  event.preventDefault();
  setToken($("token").value.trim());
  $("token").value = "";
  refreshStatus();
  restartWatch();
}

function forgetToken() {
  setToken("");
  refreshStatus();
  restartWatch();
}

$("token-form").addEventListener("submit", useToken);
$("token-clear").addEventListener("click", forgetToken);
startStatus();
startKeyBrowser();
startFeed();
