//! `starfish openapi --config FILE`: prints the OpenAPI 3.1 document of the routes
//! the config produces (the same document `GET /openapi.json` serves).

use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct OpenapiArgs {
    /// The config file (`.json` is read as JSON, anything else as YAML).
    #[arg(long, short)]
    config: PathBuf,
}

/// Prints the document, pretty, to stdout.
pub(crate) fn run(args: &OpenapiArgs) -> Result<(), String> {
    let (text, is_json) = crate::read_config(&args.config)?;
    let config = crate::load_config(&args.config, &text, is_json)?;
    let document = starfish_server::openapi_document(&config);
    let text = serde_json::to_string_pretty(&document)
        .map_err(|e| format!("cannot serialise the document: {e}"))?;
    println!("{text}");
    Ok(())
}
