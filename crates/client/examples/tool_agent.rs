//! A tool-calling agent whose risky tool waits for a human's approval in Countersign.
//!
//! ```sh
//! cargo run --release -- serve                     # in another terminal; note the API key
//! export COUNTERSIGN_API_KEY=cs_...                # or HUMANLAYER_API_KEY
//! export OPENAI_API_KEY=sk-...                     # or OPENAI_BASE_URL for any compatible server
//! export OPENAI_MODEL=gpt-4o-mini                  # optional
//! cargo run -p countersign-client --example tool_agent -- "Email bob@example.com that the build is green"
//! ```
//!
//! Then approve or reject `send_email` in the web inbox, with `countersign inbox`, or through the
//! API. `lookup_contact` runs without asking.

use countersign_client::Client;
use countersign_client::agent::{Agent, ChatModel, Tool};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let prompt = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let prompt = if prompt.is_empty() { "Tell Bob by email that the build is green.".to_owned() } else { prompt };

    let lookup_contact = Tool::new(
        "lookup_contact",
        "Find a colleague's email address by first name",
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
        |args: Value| async move {
            let name = args["name"].as_str().unwrap_or_default().to_lowercase();
            format!("{name}@example.com")
        },
    );
    let send_email = Tool::new(
        "send_email",
        "Send an email",
        json!({"type": "object",
               "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
               "required": ["to", "body"]}),
        |args: Value| async move {
            // A real agent would send the email here; it only runs once a human approved.
            println!("(sending email: {args})");
            format!("email sent to {}", args["to"])
        },
    )
    .requires_approval();

    let client = Client::from_env()?;
    eprintln!("run id {}; risky calls wait for a human at {}", client.run_id(), client.base_url());
    let agent = Agent::new(ChatModel::from_env()?, client)
        .system("You are an assistant that can look up colleagues and send emails. Keep answers short.")
        .tool(lookup_contact)
        .tool(send_email);
    let answer = agent.run(&prompt).await?;
    println!("{}", answer.text);
    Ok(())
}
