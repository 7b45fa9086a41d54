//! Keeping `.env.example` in step with the binaries' options.

use std::path::Path;

/// What an env file means to a binary's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileArgs {
    /// `program --long=value …` for every option with an environment variable, empty values
    /// included (that is how a binary sees them from a `.env` file).
    pub args: Vec<String>,
    /// Options (but `--help` and `--version`) that have no environment variable.
    pub without_env: Vec<String>,
}

/// Reads `path` (dotenv syntax) and builds the command line `command` would see if every
/// variable in it were set. Errs when the file cannot be read or lacks one of the options'
/// variables. The binaries' tests parse the result, so `.env.example` never goes stale.
pub fn env_file_args(command: &clap::Command, path: &Path) -> Result<EnvFileArgs, String> {
    let pairs: Vec<(String, String)> = dotenvy::from_path_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = EnvFileArgs {
        args: vec![command.get_name().to_owned()],
        without_env: Vec::new(),
    };
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            out.without_env.push(id.to_owned());
            continue;
        };
        let env = env.to_string_lossy();
        let value = pairs
            .iter()
            .find(|(k, _)| *k == env)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("{env} is missing from {}", path.display()))?;
        out.args.push(format!("--{long}={value}"));
    }
    Ok(out)
}
