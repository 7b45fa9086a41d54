//! ingest-api: the HTTP front of Interaction Logger.
//!
//! Requests are authenticated, read, normalized by `interaction-core`, and handed to the
//! [`batcher`], which commits them to PostgreSQL in shared writes; only then is the client
//! answered 202. Committed chunks are published to RabbitMQ by the [`outbox`] task, the
//! [`relay`] re-publishes any the broker never confirmed, and the [`reconciler`] any it
//! confirmed but that were never finished. The binary (`main.rs`) only wires
//! configuration to [`startup::Application`].

pub mod auth;
pub mod batcher;
pub mod config;
pub mod docs;
pub mod error;
pub mod health;
pub mod ingest;
pub mod ops;
pub mod outbox;
pub mod reconciler;
pub mod relay;
pub mod schema;
pub mod startup;
pub mod state;

pub use config::{Cli, Command, Config};
pub use startup::{Application, ShutdownHandle};

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// The modules each module uses (`crate::name` outside comments and tests).
    fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut sources = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name != "lib" && name != "main" {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
                sources.insert(name, code);
            }
        }
        let names: BTreeSet<String> = sources.keys().cloned().collect();
        sources
            .iter()
            .map(|(name, code)| {
                let used = code
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("//"))
                    .flat_map(|line| line.split("crate::").skip(1))
                    .map(|rest| {
                        rest.chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect::<String>()
                    })
                    .filter(|used| used != name && names.contains(used))
                    .collect();
                (name.clone(), used)
            })
            .collect()
    }

    #[test]
    fn modules_depend_on_each_other_without_cycles() {
        let graph = module_graph();
        assert!(
            graph["ingest"].contains("state"),
            "the graph is read: {graph:?}"
        );
        // Depth-first from every module; a module met again on the current path is a cycle.
        fn visit<'a>(
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            let here = *path.last()?;
            for next in &graph[here] {
                if let Some(start) = path.iter().position(|m| m == next) {
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|m| m.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                path.push(next);
                if let Some(cycle) = visit(graph, path) {
                    return Some(cycle);
                }
                path.pop();
            }
            None
        }
        for module in graph.keys() {
            let cycle = visit(&graph, &mut vec![module.as_str()]);
            assert_eq!(
                cycle, None,
                "modules of ingest-api use each other in a circle"
            );
        }
    }
}
