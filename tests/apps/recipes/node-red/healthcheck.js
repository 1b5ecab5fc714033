// healthcheck.js of the labbuild test image "node-red" (tests/apps/recipes/node-red): the
// image's HEALTHCHECK, written from a reading of node-red/node-red-docker
// docker-custom/healthcheck.js. Same contract: ask Node-RED's editor on 127.0.0.1 at the
// port and scheme /data/settings.js sets (uiPort, https; 1880 and http without them) and
// exit 0 for any answer below 500, 1 otherwise or after 4 s.
const fs = require("fs");

let settings = {};
if (fs.existsSync("/data/settings.js")) {
    settings = require("/data/settings.js");
}
const client = Object.prototype.hasOwnProperty.call(settings, "https") ? require("https") : require("http");
const request = client.request({
    host: "127.0.0.1",
    port: settings.uiPort || 1880,
    timeout: 4000,
    rejectUnauthorized: false,       // the editor's own, often self-signed, certificate
}, (res) => process.exit(res.statusCode >= 200 && res.statusCode < 500 ? 0 : 1));
request.on("timeout", () => process.exit(1));
request.on("error", () => process.exit(1));
request.end();
