//! The command-line grammar.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Countersign: a human-in-the-loop approval gateway for AI agents.
///
/// Agents built on the HumanLayer SDKs ask for approval through Countersign's HumanLayer-compatible
/// API; humans decide. Point HUMANLAYER_API_BASE at http://HOST:PORT/humanlayer/v1.
#[derive(Debug, Parser)]
#[command(name = "countersign", version = VERSION, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// `countersign --version`: the release and the git commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("COUNTERSIGN_BUILD_COMMIT"), ")");

/// The git commit this binary was built from (see build.rs).
pub const COMMIT: &str = env!("COUNTERSIGN_BUILD_COMMIT");

/// Options every command takes. Each also reads `COUNTERSIGN_<NAME>` from the environment and
/// the configuration file; a flag wins over both.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML) [default: ~/.config/countersign/config.toml if it exists; env: COUNTERSIGN_CONFIG]
    #[arg(long, global = true, value_name = "FILE", help_heading = "Global options")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded SQLite database [default: ~/.local/share/countersign; env: COUNTERSIGN_DATA_DIR]
    #[arg(long, global = true, value_name = "DIR", help_heading = "Global options")]
    pub data_dir: Option<PathBuf>,
    /// Database URL, instead of the data directory's SQLite file [env: COUNTERSIGN_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL", help_heading = "Global options")]
    pub database_url: Option<String>,
    /// Log lines as text, or as JSON objects (one per line, with the request's span fields) for
    /// log collectors [default: text; env: COUNTERSIGN_LOG_FORMAT]
    #[arg(long, global = true, value_name = "FORMAT", value_enum, help_heading = "Global options")]
    pub log_format: Option<LogFormat>,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (creates a first API key on a fresh database).
    Serve(ServeArgs),
    /// Manage API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the people who decide: create, list, reset-password, disable.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Project settings: the default email address of requests that name no channel.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Manage signed webhook endpoints: add, list, remove, deliveries, attempts, redeliver.
    #[command(subcommand, after_help = WEBHOOKS_HELP)]
    Webhooks(WebhooksCommand),
    /// Connect a project to a Slack app: connect, status, disconnect, manifest.
    #[command(subcommand, after_help = SLACK_HELP)]
    Slack(SlackCommand),
    /// Approval receipts: verify one, list the signing keys, rotate the signing key.
    #[command(subcommand, alias = "receipt", after_help = RECEIPTS_HELP)]
    Receipts(ReceiptsCommand),
    /// Connect a project to a Twilio account for SMS and WhatsApp: connect, status, disconnect.
    #[command(subcommand, after_help = TWILIO_HELP)]
    Twilio(TwilioCommand),
    /// The tamper-evident audit log: verify the hash chains, export the events, print checkpoints.
    #[command(subcommand, after_help = AUDIT_HELP)]
    Audit(AuditCommand),
    /// A project's policy: rules that approve or deny at once, ask for a quorum, bar the key's
    /// owner, escalate and expire. set, show, test, suggest.
    #[command(subcommand, after_help = POLICY_HELP)]
    Policy(PolicyCommand),
    /// Groups of approvers a policy's quorum can name: create, add, remove, list.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Sign in to a running server as a person, for inbox, approve, reject and answer.
    #[command(after_help = terminal_help(LOGIN_EXAMPLES))]
    Login(LoginArgs),
    /// Sign out: revoke the stored login on the server and delete it from this machine.
    #[command(after_help = terminal_help(LOGOUT_EXAMPLES))]
    Logout(LogoutArgs),
    /// List the approvals and questions waiting for you, newest first.
    #[command(after_help = terminal_help(INBOX_EXAMPLES))]
    Inbox(InboxArgs),
    /// Approve a pending function call: the agent goes ahead.
    #[command(after_help = terminal_help(APPROVE_EXAMPLES))]
    Approve(ApproveArgs),
    /// Reject a pending function call with a comment or a reject option: the agent gets them back.
    #[command(after_help = terminal_help(REJECT_EXAMPLES))]
    Reject(RejectArgs),
    /// Answer a pending question from an agent.
    #[command(after_help = terminal_help(ANSWER_EXAMPLES))]
    Answer(AnswerArgs),
    /// The master key that encrypts stored channel secrets: status, rotate-master-key.
    #[command(subcommand, after_help = SECRETS_HELP)]
    Secrets(SecretsCommand),
    /// Copy everything from a SQLite database into a new PostgreSQL database, and verify it.
    #[command(after_help = MIGRATE_HELP)]
    Migrate(MigrateArgs),
    /// Write a consistent copy of the SQLite database to a new file, while the server runs.
    #[command(after_help = BACKUP_HELP)]
    Backup(BackupArgs),
    /// Put a backup in place as the SQLite database (the server must be stopped).
    #[command(after_help = BACKUP_HELP)]
    Restore(RestoreArgs),
    /// Check the configuration, the database, the master key, disk space, the clock, SMTP, Slack
    /// and Twilio credentials and the public URL; print each problem with its fix.
    #[command(after_help = DOCTOR_HELP)]
    Doctor(DoctorArgs),
    /// Ask a running server whether it is ready (`GET /readyz`): exit 0 if it is, 1 if not. For
    /// container health checks and scripts.
    #[command(after_help = HEALTH_HELP)]
    Health(HealthArgs),
    /// The configuration: show what is in effect (secrets masked), print the reference of every key.
    #[command(subcommand, after_help = CONFIG_HELP)]
    Config(ConfigCommand),
    /// Serve MCP over stdio: `request_permission` (Claude Code's --permission-prompt-tool) and
    /// `ask_human`; `mcp gate` puts a human in front of another MCP server's tools.
    #[command(after_help = MCP_HELP)]
    Mcp(McpArgs),
}

const LOGIN_EXAMPLES: &str = "  countersign login --server https://countersign.example.com --email ada@example.com
  pass show countersign | countersign login --email ada@example.com --password-stdin";
const LOGOUT_EXAMPLES: &str = "  countersign logout";
const INBOX_EXAMPLES: &str = "  countersign inbox
  countersign inbox --json | jq -r '.[] | select(.project == \"billing\") | .call_id'";
const APPROVE_EXAMPLES: &str = "  countersign approve call-123
  countersign approve call-123 -m 'fine, under the limit' --project billing";
const REJECT_EXAMPLES: &str = "  countersign reject call-123 -m 'not above 100'
  countersign reject call-123 --option too_expensive";
const ANSWER_EXAMPLES: &str = "  countersign answer q-7 'blue, like the logo'
  countersign answer q-7 --option yes";

/// The `--help` epilogue of the terminal commands: examples, where the login lives, exit codes.
fn terminal_help(examples: &str) -> String {
    format!(
        "Examples:\n{examples}\n\n\
         The login is stored in ~/.config/countersign/credentials.json (or under $XDG_CONFIG_HOME), \
         readable only by you. \
         COUNTERSIGN_TOKEN, if set, is used instead of the stored token, against --server, \
         COUNTERSIGN_SERVER, the stored server or http://127.0.0.1:8484.\n\n{}",
        crate::exit::HELP
    )
}

/// Which server to talk to.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the Countersign server [default: the one you signed in to, else http://127.0.0.1:8484]
    #[arg(long, env = "COUNTERSIGN_SERVER", value_name = "URL")]
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Your email address, as an admin created you with `countersign users create`.
    #[arg(long)]
    pub email: String,
    /// Read the password from the first line of standard input instead of prompting on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct InboxArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the items as JSON (each with the full HumanLayer request) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show at most this many requests (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

/// Options of every decision.
#[derive(Debug, Args)]
pub struct DecisionOptions {
    /// The project of the request, when the id exists in several of your projects.
    #[arg(long)]
    pub project: Option<String>,
    /// Print the decided request as JSON instead of one line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The function call's id, as `countersign inbox` shows it.
    #[arg(value_name = "ID")]
    pub call_id: String,
    /// A comment passed to the agent with the approval.
    #[arg(short = 'm', long = "comment", value_name = "COMMENT")]
    pub comment: Option<String>,
    /// Approve with these arguments instead of the agent's (a JSON object), e.g.
    /// --kwargs '{"to": "cfo@example.com"}'.
    #[arg(long, value_name = "JSON")]
    pub kwargs: Option<String>,
    #[command(flatten)]
    pub options: DecisionOptions,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The function call's id, as `countersign inbox` shows it.
    #[arg(value_name = "ID")]
    pub call_id: String,
    /// Why: the agent receives it (required unless --option is given).
    #[arg(short = 'm', long = "comment", value_name = "COMMENT", required_unless_present = "option")]
    pub comment: Option<String>,
    /// One of the request's reject options, by name.
    #[arg(long, value_name = "NAME")]
    pub option: Option<String>,
    #[command(flatten)]
    pub options: DecisionOptions,
}

#[derive(Debug, Args)]
pub struct AnswerArgs {
    /// The question's id, as `countersign inbox` shows it.
    #[arg(value_name = "ID")]
    pub call_id: String,
    /// The answer (optional when --option is given).
    #[arg(required_unless_present = "option")]
    pub text: Option<String>,
    /// One of the question's response options, by name.
    #[arg(long, value_name = "NAME")]
    pub option: Option<String>,
    #[command(flatten)]
    pub options: DecisionOptions,
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Show, set or clear a project's default email: requests of the project that name no channel
    /// at all are emailed there (needs smtp_url in the configuration).
    ///
    /// Examples:
    ///   countersign projects email default approvals@example.com
    ///   countersign projects email default            # show it
    ///   countersign projects email default --clear
    #[command(verbatim_doc_comment)]
    Email {
        /// The project.
        project: String,
        /// The address to email.
        address: Option<String>,
        /// Remove the default address.
        #[arg(long, conflicts_with = "address")]
        clear: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create or rotate a project's inbound-email secret and print it (shown only this once): the
    /// inbound-mail service authenticates `POST /humanlayer/v1/email/inbound` with it, as
    /// `Authorization: Bearer SECRET` or as the password of HTTP Basic auth
    /// (`https://inbound:SECRET@host/humanlayer/v1/email/inbound`). API keys are refused there.
    /// Rotating invalidates the old secret at once.
    ///
    /// Examples:
    ///   countersign projects inbound-email-secret default
    ///   countersign projects inbound-email-secret default --revoke   # no replies by email
    #[command(verbatim_doc_comment)]
    InboundEmailSecret {
        /// The project.
        project: String,
        /// Remove the secret: the inbound endpoint then refuses every message for the project.
        #[arg(long)]
        revoke: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

const SLACK_HELP: &str = "Set up: `countersign slack manifest --public-url https://countersign.example.com` prints an \
app manifest; create the app from it at https://api.slack.com/apps (\"From a manifest\"), install it to the \
workspace, then connect the project with the app's bot token (OAuth & Permissions) and signing secret (Basic \
Information). Invite the bot to the channels it posts to (/invite @Countersign).

Examples:
  countersign slack connect --project billing --bot-token-stdin --signing-secret-stdin --default-channel C0123456
  COUNTERSIGN_SLACK_BOT_TOKEN=xoxb-... COUNTERSIGN_SLACK_SIGNING_SECRET=... countersign slack connect --project billing
  countersign slack status --project billing --json";

const RECEIPTS_HELP: &str =
    "Every decision's receipt (status.receipt) is a JWS (EdDSA, Ed25519) over what was decided \
about which exact call, with the SHA-256 of its arguments in RFC 8785 canonical JSON. The public keys are served at \
/.well-known/countersign/keys.json.

Examples:
  countersign receipt verify \"$RECEIPT\" --args '{\"amount\": 50}'              # keys from the local database
  countersign receipt verify - --keys https://cs.example.com/.well-known/countersign/keys.json < receipt.jws
  countersign receipts keys --json
  countersign receipts rotate-key

Exit codes of verify: 0 the receipt verifies (and the arguments match), 1 it does not, 2 usage error.";

#[derive(Debug, Subcommand)]
pub enum ReceiptsCommand {
    /// Verify a receipt: its signature with the published key it names, with --call-id that it is
    /// about that call, and with --args that these are the arguments it approved. Prints what it
    /// states. Exit 0 valid, 1 invalid, 2 bad usage.
    Verify {
        /// The receipt (the JWS text), or - to read it from standard input.
        receipt: String,
        /// The arguments about to run, as JSON: they must hash to the receipt's args_sha256.
        #[arg(long, value_name = "JSON")]
        args: Option<String>,
        /// The call about to run: the receipt must be about this call_id (not another call's).
        #[arg(long, value_name = "ID")]
        call_id: Option<String>,
        /// Where the public keys are: a keys.json file or URL [default: this installation's
        /// database].
        #[arg(long, value_name = "FILE|URL")]
        keys: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the signing keys: id, from when, until when (rotated out). Never the secrets.
    Keys {
        /// Print JSON (the JWK set served at /.well-known/countersign/keys.json).
        #[arg(long)]
        json: bool,
    },
    /// Make a new signing key current; the old one stops signing and stays published, so the
    /// receipts it signed stay verifiable. Running servers switch within 5 seconds.
    RotateKey {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

const TWILIO_HELP: &str = "Set up: buy a number in the Twilio console and set its \"A message comes in\" webhook \
(HTTP POST) to PUBLIC_URL/twilio/inbound, PUBLIC_URL being this server's public_url exactly as Twilio reaches it \
(the signature covers that URL; behind a proxy, public_url is the proxy's https address). For WhatsApp, set the \
same URL on the WhatsApp sender. Requests then reach a phone with `\"channel\": {\"sms\": {\"phone_number\": \
\"+15551234567\"}}` (or `whatsapp`), and a reply such as `YES 4821` decides them.

Examples:
  countersign twilio connect --project billing --account-sid AC... --auth-token-stdin --from +15550001111
  countersign twilio connect --project billing --account-sid AC... --from +15550001111 --whatsapp-from whatsapp:+15550002222
  countersign twilio status --project billing --json
  countersign users phone ada@example.com +15551234567";

#[derive(Debug, Subcommand)]
pub enum TwilioCommand {
    /// Connect a project to a Twilio account (checks the credentials with Twilio first). Requests
    /// of the project addressed to a phone number are texted from --from (SMS) or --whatsapp-from
    /// (WhatsApp); replies are verified with the auth token. Connecting again replaces it.
    Connect {
        /// The project (created by `countersign keys create --project NAME`).
        #[arg(long)]
        project: String,
        /// The account SID (AC followed by 32 hexadecimal digits).
        #[arg(long, value_name = "SID")]
        account_sid: String,
        /// The auth token. Prefer --auth-token-stdin or COUNTERSIGN_TWILIO_AUTH_TOKEN, which stay
        /// out of shell history.
        #[arg(long, env = "COUNTERSIGN_TWILIO_AUTH_TOKEN", hide_env_values = true, value_name = "TOKEN")]
        auth_token: Option<String>,
        /// Read the auth token from the first line of standard input (wins over the variable).
        #[arg(long)]
        auth_token_stdin: bool,
        /// The number SMS are sent from, in international form (+15550001111).
        #[arg(long, value_name = "NUMBER")]
        from: String,
        /// The WhatsApp sender (whatsapp:+15550002222); without it nothing is sent by WhatsApp.
        #[arg(long, value_name = "NUMBER")]
        whatsapp_from: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a project's Twilio connection: the account, the senders, the inbound URL to give
    /// Twilio, whether Twilio accepts the credentials. Never shows the auth token. Exits 1 when
    /// the project is not connected or Twilio refuses the credentials.
    Status {
        #[arg(long)]
        project: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disconnect a project from Twilio: its auth token is deleted; nothing more is texted and
    /// replies are refused.
    Disconnect {
        #[arg(long)]
        project: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SlackCommand {
    /// Connect a project to a Slack app (checks the token with auth.test first). Requests of the
    /// project addressed to Slack are posted with the bot token; clicks and replies are verified
    /// with the signing secret. Connecting again replaces the earlier connection.
    Connect {
        /// The project (created by `countersign keys create --project NAME`).
        #[arg(long)]
        project: String,
        /// The app's bot token (xoxb-...). Prefer --bot-token-stdin or COUNTERSIGN_SLACK_BOT_TOKEN,
        /// which stay out of shell history.
        #[arg(long, env = "COUNTERSIGN_SLACK_BOT_TOKEN", hide_env_values = true, value_name = "TOKEN")]
        bot_token: Option<String>,
        /// Read the bot token from the first line of standard input (wins over the variable).
        #[arg(long)]
        bot_token_stdin: bool,
        /// The app's signing secret (Basic Information → App Credentials).
        #[arg(long, env = "COUNTERSIGN_SLACK_SIGNING_SECRET", hide_env_values = true, value_name = "SECRET")]
        signing_secret: Option<String>,
        /// Read the signing secret from standard input (after the bot token, when both are read).
        #[arg(long)]
        signing_secret_stdin: bool,
        /// Where requests that name no channel are posted: a channel id (C...) or a user id (U...).
        #[arg(long, value_name = "CHANNEL")]
        default_channel: Option<String>,
        /// Only Slack users whose Slack email belongs to a person of this project may decide.
        #[arg(long)]
        require_known_users: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a project's Slack connection: the workspace and bot (asks Slack with auth.test), the
    /// default channel, whether the signing secret is set. Never shows the token or the secret.
    /// Exits 1 when the project is not connected or Slack refuses the token.
    Status {
        #[arg(long)]
        project: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disconnect a project from Slack: its token and secret are deleted; requests are no longer
    /// posted and clicks on earlier messages are refused.
    Disconnect {
        #[arg(long)]
        project: String,
    },
    /// Print a Slack app manifest (JSON, which Slack accepts) with the scopes the channel needs and
    /// both request URLs filled in from the public URL.
    Manifest {
        /// The URL Slack reaches this server at [default: public_url from the configuration].
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// Print compact JSON on one line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a person with a role in one or more projects (created if new).
    Create {
        /// Their email address (also their login).
        #[arg(long)]
        email: String,
        /// admin or approver.
        #[arg(long, value_parser = ["admin", "approver"])]
        role: String,
        /// A project they decide for; repeat for several.
        #[arg(long = "project", required = true)]
        projects: Vec<String>,
        /// Read the password from the first line of standard input (at least 10 characters);
        /// without it, a one-time link to set the password in the browser is printed.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List people, with their role, projects and status.
    List {
        /// Only people of this project.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Give a person access to more projects (created if new); takes effect at once, also for
    /// people signed in.
    AddProject {
        /// Their email address.
        email: String,
        /// A project to add; repeat for several.
        #[arg(long = "project", required = true)]
        projects: Vec<String>,
    },
    /// Take a person out of projects: they no longer see or decide their requests, at once.
    RemoveProject {
        /// Their email address.
        email: String,
        /// A project to take them out of; repeat for several.
        #[arg(long = "project", required = true)]
        projects: Vec<String>,
    },
    /// Disable a person: they can no longer sign in or decide.
    Disable {
        /// Their email address.
        email: String,
    },
    /// Print a new one-time link with which a person sets their password (valid 72 hours).
    ResetPassword {
        /// Their email address.
        email: String,
    },
    /// Set a person's phone number (or show it, or clear it): their SMS and WhatsApp replies then
    /// decide as them (their email in the decision), and a policy's groups count them.
    Phone {
        /// Their email address.
        email: String,
        /// The number, in international form (+15551234567); without it, the number is shown.
        number: Option<String>,
        /// Remove the number.
        #[arg(long, conflicts_with = "number")]
        clear: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8484; env: COUNTERSIGN_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

const SECRETS_HELP: &str = "Webhook signing secrets, Slack tokens and signing secrets, Twilio auth tokens, \
the email link key and the receipt signing keys are stored encrypted (XChaCha20-Poly1305) with a master key \
that is not in the database: COUNTERSIGN_MASTER_KEY, else the file COUNTERSIGN_MASTER_KEY_FILE, else \
master.key beside the SQLite database (or in the data directory on PostgreSQL), created 0600 on first use. Every instance on one PostgreSQL database needs the same key.

Examples:
  countersign secrets status
  systemctl stop countersign && countersign secrets rotate-master-key && systemctl start countersign";

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Show where the master key comes from and its id (never the key).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replace the master key with a new random one and re-encrypt every stored secret with it.
    /// Stop the server first (on PostgreSQL: every instance, then give them all the new key file).
    RotateMasterKey {
        /// On PostgreSQL: confirm that no instance is running (none may go on with the old key).
        #[arg(long)]
        all_instances_stopped: bool,
    },
}

const MIGRATE_HELP: &str = "Copies projects, keys, people, sessions, requests with their decisions, the \
audit log (its chains verify on PostgreSQL with the same heads), deliveries, policies, channel connections \
and signing keys, in one PostgreSQL transaction. Keys keep working. Stop the server first.

Examples:
  systemctl stop countersign
  createdb countersign
  countersign migrate --from sqlite:///var/lib/countersign/countersign.db --to postgres://cs:PASSWORD@db/countersign
  # then set database_url to the PostgreSQL URL and give every instance the same master.key";

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The SQLite database to copy [default: the configured one]
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// The PostgreSQL database to copy into; it must hold no Countersign data yet.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Print JSON: the rows copied per table and the verified audit chains.
    #[arg(long)]
    pub json: bool,
}

const BACKUP_HELP: &str = "Examples:
  countersign backup /backups/countersign-$(date +%F).db      # while serving
  systemctl stop countersign
  countersign restore /backups/countersign-2026-12-07.db --replace
  systemctl start countersign

A backup holds every write acknowledged before it began. It is a SQLite file: `sqlite3 FILE` opens it.
Its channel secrets are encrypted with the master key, which is not in it: keep a copy of
master.key (beside the database, or COUNTERSIGN_MASTER_KEY) apart from the backups.
On PostgreSQL, use pg_dump and pg_restore (see the README, \"Backups\").";

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The new file to write (it must not exist).
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore (from `countersign backup`).
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// If a database is already there, move it aside (renamed `countersign.db.before-restore-TIME`,
    /// not deleted) instead of refusing.
    #[arg(long)]
    pub replace: bool,
}

const DOCTOR_HELP: &str = "It changes nothing: the database is read without migrations, no key file is \
created, and the Slack and Twilio credentials are only asked whether they work (auth.test, the account).

Examples:
  countersign doctor
  countersign --config /etc/countersign/config.toml doctor --json | jq '.checks[] | select(.status == \"fail\")'

Exit codes: 0 when no check failed (warnings allowed); 1 when one did.";

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON: {ok, checks: [{check, status (ok, warn, fail, skip), detail, fix?}]}.
    #[arg(long)]
    pub json: bool,
    /// The server's URL to check instead of public_url (or the listen address).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

const HEALTH_HELP: &str = "Examples:
  countersign health                       # the server of this configuration's `listen`
  countersign health --url https://countersign.example.com

Exit codes: 0 ready; 1 not ready, unreachable or no answer within --timeout.";

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The server's base URL [default: http:// and the configured `listen` address (an
    /// unspecified address asks loopback)]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub timeout: u64,
}

const CONFIG_HELP: &str = "Layers, each overriding the one before: built-in defaults, the TOML file \
(--config, COUNTERSIGN_CONFIG, or ~/.config/countersign/config.toml), COUNTERSIGN_<KEY> environment \
variables, then flags.

Examples:
  countersign config show
  countersign config show --json | jq -r .database_url
  countersign config reference";

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration in effect, as TOML a config file can hold; passwords in URLs and
    /// the metrics token are masked.
    Show {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Print every configuration key with its environment variable, default and meaning (Markdown).
    Reference,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key (and the project, if new); the key is printed once, alone on the last line.
    Create {
        /// Project the key belongs to.
        #[arg(long, default_value = "default")]
        project: String,
        /// A label to recognise the key by in `keys list`.
        #[arg(long)]
        name: Option<String>,
        /// What the key may do; repeatable. `agent`: create requests, read, wait and escalate them
        /// (what an agent needs; recommended for agents). `decide`: respond to requests, as a
        /// human would. `admin`: manage webhooks. Without --scope the key gets all three
        /// (HumanLayer's API lets a key respond).
        #[arg(long = "scope", value_name = "SCOPE", value_parser = ["agent", "decide", "admin"])]
        scopes: Vec<String>,
        /// The person the key acts for (their email). A policy rule with
        /// `separation_of_duties = true` bars them from approving the key's requests.
        #[arg(long, value_name = "EMAIL")]
        owner: Option<String>,
    },
    /// List API keys (never the secrets).
    List {
        /// Only keys of this project.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by its id or its displayed prefix; running servers refuse it within a second.
    Revoke {
        /// The key's id or prefix, as shown by `keys list`.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set a project's policy from a TOML file (`-` reads standard input). The file is checked
    /// first: a bad one is refused with its line and what is wrong, and the policy in force stays.
    Set {
        /// The project.
        #[arg(long, default_value = "default")]
        project: String,
        /// The policy file.
        file: std::path::PathBuf,
    },
    /// Print a project's policy file (to save, edit and set again); who set it and when go to
    /// standard error.
    Show {
        #[arg(long, default_value = "default")]
        project: String,
        /// Print JSON: the text, version, rule names, who set it and when.
        #[arg(long)]
        json: bool,
    },
    /// Show which rule decides a call and what would happen, without creating anything.
    Test {
        #[arg(long, default_value = "default")]
        project: String,
        /// The function name (with --question: the question).
        #[arg(value_name = "FN")]
        function: String,
        /// The call's arguments as a JSON object.
        #[arg(value_name = "ARGS_JSON", default_value = "{}")]
        args: String,
        /// The run id the call would have.
        #[arg(long)]
        run_id: Option<String>,
        /// Test a question instead of a function call (FN is the question).
        #[arg(long)]
        question: bool,
        /// The requesting key's owner, for separation of duties.
        #[arg(long, value_name = "EMAIL")]
        owner: Option<String>,
        /// Test this draft policy file instead of the one in force.
        #[arg(long, value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List functions people approved at least --min times and nobody rejected in the last
    /// --days days, as `approve` rules ready to paste (with what their arguments had in common).
    /// Nothing is applied.
    Suggest {
        #[arg(long, default_value = "default")]
        project: String,
        /// Fewest approvals by people for a suggestion.
        #[arg(long, default_value_t = 10)]
        min: u64,
        /// How many days back to look.
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Create a group of approvers with its first members (people of the project).
    Create {
        /// The group's name, as policies name it (`approvers = { group = "NAME", count = 2 }`).
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
        /// A member's email; repeatable. Each must be a person of the project.
        #[arg(long = "member", value_name = "EMAIL")]
        members: Vec<String>,
    },
    /// Add members to a group.
    Add {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
        #[arg(long = "member", value_name = "EMAIL", required = true)]
        members: Vec<String>,
    },
    /// Remove members from a group.
    Remove {
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
        #[arg(long = "member", value_name = "EMAIL", required = true)]
        members: Vec<String>,
    },
    /// List groups and their members.
    List {
        /// Only groups of this project.
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

const POLICY_HELP: &str = "\
A policy is a TOML file of [[rule]] tables; the first rule that matches a request decides, and
requests no rule matches are asked as without a policy. See the README's Policies section.

Examples:
  countersign policy set --project billing policy.toml
  countersign policy show --project billing > policy.toml
  countersign policy test --project billing refund '{\"amount\": 50, \"currency\": \"USD\"}'
  countersign policy suggest --project billing --min 20
  countersign groups create finance --project billing --member ada@example.com --member bob@example.com";

const WEBHOOKS_HELP: &str = "\
Countersign POSTs an event to a project's endpoints when one of its requests is created,
decided or escalated, signed the Standard Webhooks way (headers webhook-id, webhook-timestamp,
webhook-signature), and retries failed deliveries for about a day. These commands work on the
database directly, like `keys`; a running server picks up changes within a second.

Examples:
  countersign webhooks add --project billing https://hooks.example.com/countersign
  countersign webhooks add https://hooks.example.com/all --events all --format legacy
  countersign webhooks list --project billing
  countersign webhooks deliveries wh_0193... --limit 20
  countersign webhooks attempts msg_5f2c...
  countersign webhooks redeliver msg_5f2c...
  countersign webhooks remove wh_0193...";
const WEBHOOKS_ADD_EXAMPLES: &str = "\
Events: function_call.created, function_call.completed, function_call.escalated,
human_contact.created, human_contact.completed, human_contact.escalated, or all.

Examples:
  countersign webhooks add --project billing https://hooks.example.com/countersign
  countersign webhooks add https://h.example --events function_call.created,human_contact.created
  countersign webhooks add https://hooks.example.com/all --events all --format legacy
  countersign webhooks add https://hooks.example.com/x --json | jq -r .secret";

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Add an endpoint (and its project, if new); prints its signing secret once, on the last line.
    #[command(after_help = WEBHOOKS_ADD_EXAMPLES)]
    Add {
        /// Where to POST the events: an http:// or https:// URL.
        url: String,
        /// Project whose requests the endpoint hears about.
        #[arg(long, default_value = "default")]
        project: String,
        /// Comma-separated event names, or `all` [default: function_call.completed,human_contact.completed]
        #[arg(long, value_name = "LIST")]
        events: Option<String>,
        /// Body format: v1beta2 (`{"is_test", "type", "event"}`) or legacy (the bare request object).
        #[arg(long, default_value = "v1beta2", value_parser = ["v1beta2", "legacy"])]
        format: String,
        /// Print the endpoint, secret included, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List endpoints (never their secrets).
    List {
        /// Only endpoints of this project.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint; its pending deliveries are marked failed.
    Remove {
        /// The endpoint's id (`wh_...`), as `webhooks list` shows it.
        #[arg(value_name = "ENDPOINT_ID")]
        id: String,
    },
    /// An endpoint's delivery log, newest first: status, attempts, last answer, next attempt.
    Deliveries {
        /// The endpoint's id (`wh_...`), as `webhooks list` shows it.
        #[arg(value_name = "ENDPOINT_ID")]
        endpoint_id: String,
        /// Show at most this many deliveries (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One delivery and each of its attempts: when, the HTTP status or error, the latency.
    Attempts {
        /// The delivery's id (`msg_...`, also its webhook-id header), as `webhooks deliveries` shows it.
        #[arg(value_name = "DELIVERY_ID")]
        delivery_id: String,
        /// Print JSON (the delivery with an `attempts_log` list) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a delivery again now, whatever its status; a running server sends it within a second.
    Redeliver {
        /// The delivery's id (`msg_...`, also its webhook-id header), as `webhooks deliveries` shows it.
        #[arg(value_name = "DELIVERY_ID")]
        delivery_id: String,
        /// Print the delivery as JSON.
        #[arg(long)]
        json: bool,
    },
}

const AUDIT_HELP: &str = "Examples:
  countersign audit verify
  countersign audit head --project billing > billing.checkpoint
  countersign audit verify --project billing --checkpoint billing.checkpoint
  countersign audit export --project billing --since 1200 --jsonl > billing-events.jsonl

Everything that happens to a request (created, decided, escalated) is an event in its project's
hash chain: each event's hash covers its exact text and the hash of the event before,
SHA-256(\"countersign.event.v1\\0\" || seq as 8 bytes big-endian || prev_hash || event).
`verify` recomputes every chain from the database and exits 1 naming the first event that was
changed, removed or inserted; a checkpoint from `head`, kept elsewhere, also catches a chain
rewritten from some point on or cut short. The same events are served to a key with the admin
scope at GET /humanlayer/v1/audit?after=SEQ&limit=N.";

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the chains: exit 0 with each chain's count and head hash, or 1 naming the first
    /// event that does not match.
    Verify {
        /// Only this project's chain.
        #[arg(long)]
        project: Option<String>,
        /// Also check that the chains still hold the checkpoints in FILE (as `audit head` prints them).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print sealed events with their chain positions and hashes (a JSON array, or JSON lines).
    Export {
        /// Only this project's events.
        #[arg(long)]
        project: Option<String>,
        /// Only events after this chain position.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        since: u64,
        /// One JSON object per line instead of an array.
        #[arg(long)]
        jsonl: bool,
    },
    /// Print the head of each chain as a checkpoint line: `PROJECT COUNT HASH`.
    Head {
        /// Only this project's chain.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of checkpoint lines.
        #[arg(long)]
        json: bool,
    },
}

const MCP_HELP: &str = "Examples:
  countersign mcp --server http://127.0.0.1:8484 --key cs_...
  countersign mcp gate --rules gate.rules -- npx -y @modelcontextprotocol/server-filesystem ~/notes
  claude -p 'tidy the repo' --permission-prompt-tool mcp__countersign__request_permission --mcp-config mcp.json

The tools are clients of a running server: every call is an approval or a question in its inbox.
Standard output carries the protocol; logs go to standard error (COUNTERSIGN_LOG=debug for more).";

const GATE_HELP: &str = "Examples:
  countersign mcp gate --ask write_file --ask edit_file \\
    -- npx -y @modelcontextprotocol/server-filesystem ~/notes
  countersign mcp gate --rules gate.rules \\
    --url https://mcp.example.com/mcp --header 'Authorization: Bearer ...'
  countersign mcp gate --rules gate.rules --explain write_file '{\"path\": \"/etc/hosts\"}'

Rules, one per line (# starts a comment). The first rule that matches a call decides;
a call that no rule matches is forwarded at once:
  allow write_file when path ~ \"/tmp/scratch/*\"   # forwarded at once (listed before the ask)
  ask   write_file                                # a human approves, edits or rejects first
  deny  move_file when source ~ \"/etc/*\"         # refused without asking
  ask   transfer when amount > 100 and currency == \"USD\"
Conditions: ARG OP VALUE, or ARG exists. ARG names an argument (dots reach inside:
options.force); VALUE is JSON (\"text\", 12, true, null); OP is == != < <= > >=,
~ !~ (glob), ~* !~* (glob, any case). An argument of a type OP cannot compare makes ask and
deny rules match and allow rules not. A bad rules file is refused with the line and why.

Approved calls are forwarded with the arguments the human approved (edited or not);
rejected calls return a tool error with the human's words. While a human decides, the
gate sends progress notifications so the MCP client does not time out.";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct McpArgs {
    #[command(subcommand)]
    pub command: Option<McpCommand>,
    #[command(flatten)]
    pub connection: McpConnection,
}

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Put a human in front of another MCP server's tools: a proxy that asks before the calls its
    /// rules select.
    #[command(after_help = GATE_HELP)]
    Gate(GateArgs),
}

/// How the MCP tools reach Countersign.
#[derive(Debug, Args)]
pub struct McpConnection {
    /// Base URL of the Countersign server, e.g. http://127.0.0.1:8484 (`/humanlayer/v1` is added when
    /// the path is missing) [default: COUNTERSIGN_API_BASE or HUMANLAYER_API_BASE, else http://127.0.0.1:8484]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The project's API key [default: COUNTERSIGN_API_KEY or HUMANLAYER_API_KEY]
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Groups this session's requests [default: COUNTERSIGN_RUN_ID or HUMANLAYER_RUN_ID, else
    /// mcp-<random> (gate-<random> for the gate)]
    #[arg(long)]
    pub run_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// The rules file: which tool calls need a human (see below) [default: every call is asked]
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Ask before calls of the tools matching GLOB (after the rules file's rules; repeatable)
    #[arg(long, value_name = "GLOB")]
    pub ask: Vec<String>,
    /// The downstream server's streamable HTTP URL, instead of a command
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    pub url: Option<String>,
    /// An HTTP header for --url, e.g. 'Authorization: Bearer TOKEN' (repeatable)
    #[arg(long, value_name = "NAME: VALUE", requires = "url")]
    pub header: Vec<String>,
    /// Print what the rules do with a call of TOOL (with ARGUMENTS, a JSON object) and exit,
    /// without starting anything; e.g. --explain write_file '{"path": "/etc/hosts"}'
    #[arg(long, value_names = ["TOOL", "ARGUMENTS"], num_args = 1..=2, conflicts_with_all = ["url", "command"])]
    pub explain: Option<Vec<String>>,
    #[command(flatten)]
    pub connection: McpConnection,
    /// The downstream MCP server's command and arguments (after `--`); it serves MCP on stdio
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}
