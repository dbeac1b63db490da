// How to call smsgw from Node with @grpc/grpc-js and @grpc/proto-loader.
//
// Run it against a server (clients/run.sh does all of this for you):
//
//   cd clients/node && npm ci
//   export SMSGW_ADDR=127.0.0.1:50051
//   export SMSGW_API_KEY=app_... SMSGW_API_SECRET=sec_...   # smsgw account create NAME
//   node example.js
//
// No code generation: proto-loader reads the contract (proto/sms/v1/*.proto) at start.
// Rich error details are a google.rpc.Status in the `grpc-status-details-bin` trailer;
// we decode it with protobufjs from protos/google/rpc/*.proto (copied from googleapis).
//
// It sends a message, checks a verification code (a wrong one, then the right one),
// shows a rejected request's google.rpc details, and follows the message's status
// stream until the message is final. It exits 0 only if everything went as expected.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_DIR = process.env.SMSGW_PROTO_DIR || path.resolve(__dirname, '../../proto');
const RPC_PROTO_DIR = path.join(__dirname, 'protos');

// Statuses after which a message never changes again (API.md).
const FINAL = new Set([
  'MESSAGE_STATUS_DELIVERED',
  'MESSAGE_STATUS_UNDELIVERED',
  'MESSAGE_STATUS_FAILED',
  'MESSAGE_STATUS_REJECTED',
  'MESSAGE_STATUS_CANCELLED',
]);

// The example's own assertions: a failed one ends the program with exit code 1.
function check(condition, what) {
  if (!condition) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
}

// grpc-js unary methods take a callback; this turns one call into a promise.
function unary(client, method, request, metadata) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

// google.rpc.Status and the detail messages (ErrorInfo, BadRequest, RetryInfo, ...).
function loadRpcTypes() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    target.startsWith('google/protobuf/') ? target : path.join(RPC_PROTO_DIR, target);
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
  return root;
}

// Decodes the `grpc-status-details-bin` trailer of a failed call: a google.rpc.Status
// whose `details` are google.protobuf.Any. Returns [{type, message}] (type without
// the "type.googleapis.com/" prefix), or [] when the error carries no details.
function errorDetails(error, rpcTypes) {
  const [raw] = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  if (!raw) return [];
  const status = rpcTypes.lookupType('google.rpc.Status').decode(raw);
  return status.details.map((any) => {
    const type = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const message = rpcTypes.lookupType(type).decode(any.value);
    return { type, message: message.toJSON() }; // toJSON: enums and int64 as strings
  });
}

async function main() {
  const addr = process.env.SMSGW_ADDR || '127.0.0.1:50051';
  const key = process.env.SMSGW_API_KEY;
  const secret = process.env.SMSGW_API_SECRET;
  check(key && secret, 'SMSGW_API_KEY and SMSGW_API_SECRET are set');
  // A different number per example: codes to one number are limited to one a minute.
  const verifyMobile = process.env.SMSGW_VERIFY_MOBILE || '+8613800138002';

  // Field names in camelCase, enums as their names, int64 as strings.
  const definition = protoLoader.loadSync(['sms/v1/message.proto', 'sms/v1/verification.proto'], {
    includeDirs: [PROTO_DIR],
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const sms = grpc.loadPackageDefinition(definition).sms.v1;
  const rpcTypes = loadRpcTypes();

  // Every call carries `authorization: Basic base64(api_key:api_secret)` metadata.
  const auth = new grpc.Metadata();
  auth.set('authorization', `Basic ${Buffer.from(`${key}:${secret}`).toString('base64')}`);

  // Clients made from one channel share its HTTP/2 connection. TLS:
  // grpc.credentials.createSsl() instead of createInsecure().
  const credentials = grpc.credentials.createInsecure();
  const messages = new sms.MessageService(addr, credentials);
  const verifications = new sms.VerificationService(addr, credentials, {
    channelOverride: messages.getChannel(),
  });

  // 1. Send a message. It is stored durably before the answer comes back.
  const sent = await unary(
    messages,
    'sendMessage',
    { mobile: '+8613800138000', useType: 'USE_TYPE_NOTIFICATION', text: 'Your order has shipped.' },
    auth,
  );
  console.log(`sent message ${sent.id} to ${sent.toNumber} (${sent.segments} segment(s))`);
  check(sent.status === 'MESSAGE_STATUS_PENDING', 'a new message is PENDING');

  // 2a. A verification code. We choose the code ourselves (`code`) so that the example
  // knows a wrong one; normally the server draws it and you leave `code` out.
  const otp = await unary(
    verifications,
    'sendVerification',
    { mobile: verifyMobile, scene: 'login', code: '123456' },
    auth,
  );
  console.log(`verification ${otp.verifyId} sent to ${verifyMobile}`);

  // A wrong code is not an error: the answer is OK with valid=false and the attempts
  // left. (Expired or exhausted codes are FAILED_PRECONDITION errors.)
  const wrong = await unary(
    verifications,
    'checkVerification',
    { verifyId: otp.verifyId, mobile: verifyMobile, code: '654321' },
    auth,
  );
  console.log(`wrong code: valid=${wrong.valid}, ${wrong.remainingAttempts} attempts left`);
  check(!wrong.valid && wrong.remainingAttempts === 2, 'a wrong code leaves 2 attempts');
  const right = await unary(
    verifications,
    'checkVerification',
    { verifyId: otp.verifyId, mobile: verifyMobile, code: '123456' },
    auth,
  );
  console.log(`right code: valid=${right.valid}`);
  check(right.valid, 'the right code verifies');

  // 2b. A bad request: INVALID_ARGUMENT with google.rpc details in the trailer.
  let refused = null;
  try {
    await unary(
      messages,
      'sendMessage',
      { mobile: '12', useType: 'USE_TYPE_NOTIFICATION', text: 'x' },
      auth,
    );
  } catch (error) {
    refused = error;
  }
  check(refused, 'an invalid mobile is refused');
  console.log(`bad request: ${grpc.status[refused.code]}: ${refused.details}`);
  check(refused.code === grpc.status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
  const details = errorDetails(refused, rpcTypes);
  check(details.length > 0, 'the error carries google.rpc.Status details');
  const fields = [];
  let reason = '';
  for (const { type, message } of details) {
    if (type === 'google.rpc.BadRequest') {
      for (const violation of message.fieldViolations) {
        console.log(`  field ${violation.field}: ${violation.description}`);
        fields.push(violation.field);
      }
    } else if (type === 'google.rpc.ErrorInfo') {
      console.log(`  reason ${message.reason} (domain ${message.domain})`, message.metadata);
      reason = message.reason;
    }
  }
  check(fields.includes('mobile'), 'the BadRequest names the field `mobile`');
  check(reason !== '', 'the ErrorInfo has a reason');

  // 3. Follow the message until it is final. With `ids` the stream first sends the
  // current state, then each change, and ends by itself at a final status. A server
  // stream is a Node Readable: `for await` reads it and throws if the call fails.
  const stream = messages.watchMessageStatus({ ids: [sent.id] }, auth, {
    deadline: new Date(Date.now() + 60_000),
  });
  let last = 'MESSAGE_STATUS_UNSPECIFIED';
  for await (const event of stream) {
    last = event.status;
    console.log(`event ${event.eventId}: ${event.messageId} ${event.status} ${event.errorCode}`.trimEnd());
  }
  check(FINAL.has(last), 'the stream ends at a final status');
  check(last === 'MESSAGE_STATUS_DELIVERED', 'the message is DELIVERED');

  messages.close();
  console.log('node example: OK');
}

main().catch((error) => {
  console.error('FAILED:', error);
  process.exit(1);
});
