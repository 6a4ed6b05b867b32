//! `obo-config check [--env NAME=VALUE]... [--assume-env] FILE...`: checks every entra-obo-filter
//! plugin configuration in each file with the filter's own parser and prints each problem with
//! its field, then each warning. Exit status 0: all valid; 1: a problem, or no configuration at
//! all; 2: the command itself was wrong.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use obo_config::{check, find_plugin_configs, CheckEnv};

const USAGE: &str = "usage: obo-config check [--env NAME=VALUE]... [--assume-env] FILE...

Checks the entra-obo-filter plugin configurations in each FILE (raw JSON, an Envoy bootstrap with
the .wasm or the native module, an Istio EnvoyFilter, WasmPlugin or TrafficExtension, an Envoy
Gateway EnvoyExtensionPolicy; `-` reads standard input) with the filter's own parser. The native
module is found under the filter name entra_obo, or as the module entra_obo_native.

  --env NAME=VALUE  a value for an environment variable the configuration reads
  --assume-env      give every variable without a value a placeholder (check without secrets)

The .wasm sees only the variables its VM declares (vm_config.environment_variables, or the
WasmPlugin's vmConfig.env); declared host variables are taken from this command's environment,
which also stands in for Envoy's own, all of which the native module reads.

Given an Envoy configuration, it also checks that each token_cluster and each cluster a client
assertion is fetched from (client_assertion_source, or azure_federated_token for workload
identity) is one of its clusters, and warns about routes to a target that follow redirects or
mirror requests, clusters that let the request choose its endpoint, an assertion file served where
a listener with an address reaches it, credentials written into the configuration, and a loader
that fails open. A file without a plugin configuration (a ServiceEntry, say) is skipped.

Exit status: 0 when every configuration is valid (warnings do not count), 1 when one is not or no
file held any, 2 when the command line is wrong.";

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
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(true);
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
    let (mut all_valid, mut configurations) = (true, 0);
    for file in &files {
        let (valid, found) = check_file(file, &env)?;
        all_valid &= valid;
        configurations += found;
    }
    if configurations == 0 {
        println!(
            "no entra-obo-filter plugin configuration in {}",
            files.join(", ")
        );
        return Ok(false);
    }
    Ok(all_valid)
}

/// Whether every configuration in `file` is valid, and how many there are.
fn check_file(file: &str, env: &CheckEnv) -> Result<(bool, usize), String> {
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
            return Ok((false, 0));
        }
    };
    if found.is_empty() {
        // A ServiceEntry or a DestinationRule beside the plugin's manifest: nothing to check.
        println!("{file}: no entra-obo-filter plugin configuration (skipped)");
        return Ok((true, 0));
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
    Ok((valid, found.len()))
}
