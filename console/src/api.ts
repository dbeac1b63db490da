// The console's calls: the public sms.v1 API over Connect (JSON) on the page's own
// origin, with the operator's API key and secret as Basic credentials, as any other
// caller; the gateway decides what the credential may see.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AccountService } from "../../generated/ts/sms/v1/account_pb";
import { ConsoleService } from "../../generated/ts/sms/v1/console_pb";
import { SuppressionService } from "../../generated/ts/sms/v1/suppression_pb";
import { WebhookService } from "../../generated/ts/sms/v1/webhook_pb";

export type Credential = { key: string; secret: string };

export type Api = {
  console: Client<typeof ConsoleService>;
  accounts: Client<typeof AccountService>;
  webhooks: Client<typeof WebhookService>;
  suppressions: Client<typeof SuppressionService>;
};

const STORE_KEY = "smsgw.console.credential";

// sessionStorage only: gone when the tab closes, never sent anywhere but this origin.
export function loadCredential(): Credential | null {
  const raw = sessionStorage.getItem(STORE_KEY);
  if (!raw) return null;
  try {
    const value = JSON.parse(raw) as Credential;
    return value.key && value.secret ? value : null;
  } catch {
    return null;
  }
}

export function saveCredential(credential: Credential | null): void {
  if (credential) sessionStorage.setItem(STORE_KEY, JSON.stringify(credential));
  else sessionStorage.removeItem(STORE_KEY);
}

function basicAuth(credential: Credential): Interceptor {
  const bytes = new TextEncoder().encode(`${credential.key}:${credential.secret}`);
  const header = "Basic " + btoa(String.fromCharCode(...bytes));
  return (next) => async (req) => {
    req.header.set("Authorization", header);
    return await next(req);
  };
}

export function makeApi(credential: Credential): Api {
  const transport = createConnectTransport({
    baseUrl: window.location.origin,
    interceptors: [basicAuth(credential)],
  });
  return {
    console: createClient(ConsoleService, transport),
    accounts: createClient(AccountService, transport),
    webhooks: createClient(WebhookService, transport),
    suppressions: createClient(SuppressionService, transport),
  };
}
