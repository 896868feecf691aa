// What the azure-queue and azure-blob tests do to Azurite, through Microsoft's own SDKs
// (@azure/storage-queue, @azure/storage-blob, installed beside Azurite by scripts/test): so
// that what the gateways read is what the official clients write.
//
//   node storage.js CONNECTION_STRING COMMAND ARGS…
//
// Commands print their result (if any) on stdout.
"use strict";
const { QueueServiceClient, QueueSASPermissions } = require("@azure/storage-queue");
const { BlobServiceClient, ContainerSASPermissions } = require("@azure/storage-blob");

const [connection, command, ...args] = process.argv.slice(2);
const queues = () => QueueServiceClient.fromConnectionString(connection);
const blobs = () => BlobServiceClient.fromConnectionString(connection);
const inAnHour = () => new Date(Date.now() + 3600 * 1000);

const commands = {
  // create-queue NAME
  async "create-queue"(name) {
    await queues().getQueueClient(name).createIfNotExists();
  },
  // send NAME JSON_LIST_OF_TEXTS [base64]: each text one message, in order (base64-encoded
  // first with `base64`, as Azure Functions expect).
  async send(name, texts, encoding) {
    const q = queues().getQueueClient(name);
    for (const t of JSON.parse(texts)) {
      await q.sendMessage(encoding === "base64" ? Buffer.from(t, "utf8").toString("base64") : t);
    }
  },
  // count NAME: "<visible> <all>" messages (all: visible and invisible).
  async count(name) {
    const q = queues().getQueueClient(name);
    const props = await q.getProperties();
    const peeked = await q.peekMessages({ numberOfMessages: 32 });
    console.log(`${peeked.peekedMessageItems.length} ${props.approximateMessagesCount}`);
  },
  // sas-queue NAME: a SAS token (query string) to read and process the queue's messages.
  async "sas-queue"(name) {
    const url = await queues().getQueueClient(name).generateSasUrl({
      permissions: QueueSASPermissions.parse("raup"),
      expiresOn: inAnHour(),
    });
    console.log(new URL(url).search.slice(1));
  },
  // create-container NAME
  async "create-container"(name) {
    await blobs().getContainerClient(name).createIfNotExists();
  },
  // put-blob CONTAINER NAME TEXT [CONTENT_TYPE]: prints the blob's ETag.
  async "put-blob"(container, name, text, contentType) {
    const b = blobs().getContainerClient(container).getBlockBlobClient(name);
    const r = await b.upload(text, Buffer.byteLength(text), {
      blobHTTPHeaders: { blobContentType: contentType || "text/plain" },
      metadata: { origin: "test" },
    });
    console.log(r.etag);
  },
  // delete-blob CONTAINER NAME
  async "delete-blob"(container, name) {
    await blobs().getContainerClient(container).deleteBlob(name);
  },
  // sas-container NAME: a SAS token (query string) to list the container.
  async "sas-container"(name) {
    const url = await blobs().getContainerClient(name).generateSasUrl({
      permissions: ContainerSASPermissions.parse("rl"),
      expiresOn: inAnHour(),
    });
    console.log(new URL(url).search.slice(1));
  },
};

const run = commands[command];
if (!run) {
  console.error(`unknown command ${command}`);
  process.exit(2);
}
run(...args).catch((e) => {
  console.error(e && e.message ? e.message : e);
  process.exit(1);
});
