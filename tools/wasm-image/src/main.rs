//! `wasm-image MODULE.wasm NAME:TAG OUT.tar`: writes the OCI image archive of the module and
//! prints its manifest digest and the module's digest.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [module, reference, out] = args.as_slice() else {
        eprintln!("usage: wasm-image MODULE.wasm NAME:TAG OUT.tar");
        return ExitCode::from(2);
    };
    let result = std::fs::read(module)
        .map_err(|e| format!("{module}: {e}"))
        .and_then(|bytes| wasm_image::pack(&bytes, reference).map_err(|e| e.to_string()))
        .and_then(|packed| {
            std::fs::write(out, &packed.archive).map_err(|e| format!("{out}: {e}"))?;
            Ok(packed)
        });
    match result {
        Ok(packed) => {
            println!("image {reference} in {out}");
            println!("image digest  {}", packed.manifest_digest);
            println!("module digest {}", packed.module_digest);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wasm-image: {e}");
            ExitCode::from(1)
        }
    }
}
