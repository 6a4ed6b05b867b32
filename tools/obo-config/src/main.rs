//! `obo-config check [--env NAME=VALUE]... [--assume-env] FILE...`: checks every entra-obo-filter
//! plugin configuration in each file with the filter's own parser and prints each problem with
//! its field. Exit status 0: all valid; 1: a problem; 2: the command itself was wrong.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use obo_config::{check, find_plugin_configs, CheckEnv};

const USAGE: &str = "usage: obo-config check [--env NAME=VALUE]... [--assume-env] FILE...

Checks the entra-obo-filter plugin configurations in each FILE (raw JSON, an Envoy bootstrap, an
Istio EnvoyFilter or WasmPlugin; `-` reads standard input) with the filter's own parser.

  --env NAME=VALUE  a value for an environment variable the configuration reads
  --assume-env      give every variable without a value a placeholder (check without secrets)

The filter sees only the variables its VM declares (vm_config.environment_variables, or the
WasmPlugin's vmConfig.env); declared host variables are taken from this command's environment.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("obo-config: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Ok(true) when every configuration is valid.
fn run(args: &[String]) -> Result<bool, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err("no command".into());
    };
    if command == "--help" || command == "-h" {
        println!("{USAGE}");
        return Ok(true);
    }
    if command != "check" {
        return Err(format!("unknown command {command}"));
    }
    let mut env = CheckEnv {
        host: std::env::vars().collect::<BTreeMap<_, _>>(),
        ..CheckEnv::default()
    };
    let mut files = Vec::new();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--assume-env" => env.assume = true,
            "--env" => {
                let pair = rest.next().ok_or("--env needs NAME=VALUE")?;
                let (name, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--env {pair}: expected NAME=VALUE"))?;
                env.overrides.insert(name.to_string(), value.to_string());
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            file => files.push(file.to_string()),
        }
    }
    if files.is_empty() {
        return Err("no FILE to check".into());
    }
    let mut all_valid = true;
    for file in &files {
        all_valid &= check_file(file, &env)?;
    }
    Ok(all_valid)
}

fn check_file(file: &str, env: &CheckEnv) -> Result<bool, String> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("standard input: {e}"))?;
        text
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?
    };
    let found = match find_plugin_configs(&text) {
        Ok(found) => found,
        Err(problem) => {
            println!("{file}: {problem}");
            return Ok(false);
        }
    };
    if found.is_empty() {
        println!("{file}: no entra-obo-filter plugin configuration found");
        return Ok(false);
    }
    let mut valid = true;
    for config in &found {
        let report = check(config, env);
        let at = if report.location.is_empty() {
            file.to_string()
        } else {
            format!("{file}: {}", report.location)
        };
        match &report.result {
            Ok(summary) => println!("{at}: ok: {summary}"),
            Err(errors) => {
                valid = false;
                for e in errors {
                    println!("{at}: {}: {}", e.field, e.problem);
                }
            }
        }
        for warning in &report.warnings {
            println!("{at}: warning: {warning}");
        }
        if !report.assumed.is_empty() {
            println!(
                "{at}: placeholder values assumed for {}",
                report.assumed.join(", ")
            );
        }
    }
    Ok(valid)
}
