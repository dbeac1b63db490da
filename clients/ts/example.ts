// Example: calling smsgw's HTTP port from TypeScript with Connect (@connectrpc/connect,
// stubs from protoc-gen-es in generated/ts), over the Connect protocol and over
// gRPC-Web: the same calls a browser app makes (there with connect-web's transports).
//
//   SMSGW_HTTP_URL=http://127.0.0.1:8080 SMSGW_API_KEY=... SMSGW_API_SECRET=... \
//     node_modules/.bin/tsx clients/ts/example.ts
//
// For each protocol it reads the google.rpc.BadRequest of an INVALID_ARGUMENT, checks
// that a wrong secret is UNAUTHENTICATED, sends a message, follows its status stream
// to the end and reads the status back; it exits 0 only if all of that behaved as
// documented.
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { BadRequestSchema, ErrorInfoSchema } from "../../generated/ts/google/rpc/error_details_pb";
import { MessageStatus, UseType } from "../../generated/ts/sms/v1/common_pb";
import { MessageService } from "../../generated/ts/sms/v1/message_pb";

const FINAL = new Set([
  MessageStatus.DELIVERED,
  MessageStatus.UNDELIVERED,
  MessageStatus.FAILED,
  MessageStatus.REJECTED,
  MessageStatus.CANCELLED,
]);

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name}`);
  return value;
}

function basicAuth(key: string, secret: string): Interceptor {
  const header = "Basic " + Buffer.from(`${key}:${secret}`).toString("base64");
  return (next) => async (req) => {
    req.header.set("Authorization", header);
    return await next(req);
  };
}

function check(condition: boolean, what: string): void {
  if (!condition) throw new Error(`not as documented: ${what}`);
}

async function expectError(call: () => Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await call();
  } catch (err) {
    const error = ConnectError.from(err);
    check(error.code === code, `expected ${Code[code]}, got ${Code[error.code]}: ${error.message}`);
    return error;
  }
  throw new Error(`expected ${Code[code]}, the call succeeded`);
}

async function run(name: string, transport: (interceptors: Interceptor[]) => Transport): Promise<void> {
  const key = env("SMSGW_API_KEY");
  const client = createClient(MessageService, transport([basicAuth(key, env("SMSGW_API_SECRET"))]));

  // Bad input: INVALID_ARGUMENT naming each field, and the reason.
  const bad = await expectError(() => client.sendMessage({ content: { case: "text", value: "hello" } }), Code.InvalidArgument);
  const fields = bad.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  for (const v of fields) console.log(`${name}: field ${v.field}: ${v.description}`);
  check(fields.some((v) => v.field === "mobile"), "the BadRequest names mobile");
  const [info] = bad.findDetails(ErrorInfoSchema);
  check(info?.reason === "INVALID_ARGUMENT" && info.domain === "smsgw", "ErrorInfo reason");

  // A wrong secret: UNAUTHENTICATED.
  const wrong = createClient(MessageService, transport([basicAuth(key, "sec_wrong")]));
  await expectError(() => wrong.getMessageStatus({ ids: ["x"] }), Code.Unauthenticated);

  // Send, then follow the status stream until the message is final.
  const sent = await client.sendMessage({
    mobile: "+8613800138000",
    useType: UseType.NOTIFICATION,
    content: { case: "text", value: `hello from TypeScript over ${name}` },
  });
  console.log(`${name}: sent ${sent.id} (${sent.segments} segment)`);
  let last = MessageStatus.UNSPECIFIED;
  for await (const event of client.watchMessageStatus({ ids: [sent.id] })) {
    check(event.messageId === sent.id, "events are the message's");
    last = event.status;
    console.log(`${name}: ${MessageStatus[event.status]}`);
    if (FINAL.has(event.status)) break;
  }
  check(last === MessageStatus.DELIVERED, "the stream reaches DELIVERED");
  const found = await client.getMessageStatus({ ids: [sent.id] });
  check(found.messages[0]?.status === MessageStatus.DELIVERED, "GetMessageStatus says DELIVERED");
}

async function main(): Promise<void> {
  const baseUrl = env("SMSGW_HTTP_URL");
  await run("connect", (interceptors) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors }),
  );
  await run("grpc-web", (interceptors) =>
    createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors, useBinaryFormat: true }),
  );
  console.log("ts example: OK");
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
