// A Node.js client of Parallax: loads the .proto contracts with @grpc/proto-loader and calls
// the standard health check and PostureService.ListControls on a running posture service.
// Usage: node client.js HOST:PORT  -> prints one JSON object with what the server answered.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const address = process.argv[2];
const protos = path.resolve(__dirname, "../../protos");
const healthProto = require.resolve("grpc-health-check/proto/health/v1/health.proto");
const options = { keepCase: false, longs: String, enums: String, defaults: true, includeDirs: [protos] };

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline(10) }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

async function main() {
  const health = grpc.loadPackageDefinition(protoLoader.loadSync(healthProto, options));
  const posture = grpc.loadPackageDefinition(
    protoLoader.loadSync("parallax/posture/v1/posture_service.proto", options),
  );
  const credentials = grpc.credentials.createInsecure();
  const healthClient = new health.grpc.health.v1.Health(address, credentials);
  const postureClient = new posture.parallax.posture.v1.PostureService(address, credentials);
  const status = await call(healthClient, "check", { service: "parallax.posture.v1.PostureService" });
  const first = await call(postureClient, "listControls", { pageSize: 5 });
  const second = await call(postureClient, "listControls", { pageSize: 5, pageToken: first.nextPageToken });
  let invalid = null;
  try {
    await call(postureClient, "listControls", { pageSize: -1 });
  } catch (error) {
    invalid = { code: grpc.status[error.code], details: error.details };
  }
  console.log(
    JSON.stringify({
      health: status.status,
      firstPage: first.controls.map((c) => ({ id: c.controlId, severity: c.severity })),
      secondPage: second.controls.map((c) => c.controlId),
      nextPageToken: second.nextPageToken,
      invalid,
    }),
  );
  healthClient.close();
  postureClient.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
