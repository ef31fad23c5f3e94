//! Instance-aware part keys (DESIGN §7): one key per occurrence of a part in a CAD
//! assembly, the path of occurrence names from the root, so the viewer manifest, the
//! material map and the render all name the same thing the same way.
//!
//! Rules, in order:
//! - OpenCASCADE names an occurrence it has no name for after the label it references
//!   (`=>[0:1:1:3]`); such a segment takes the referenced shape's own name instead (the
//!   glTF mesh name), so no key carries a label that changes with the exporter's numbering.
//! - `/` inside a name becomes `_` (it is the key's separator).
//! - Siblings that end up with the same segment are told apart by an instance index in
//!   document order: `NUT_BOLT_ASSEMBLY[1]`, `NUT_BOLT_ASSEMBLY[2]`. Names that are already
//!   unique (`nut-bolt-assembly_3`) are left as they are.
//!
//! The *part* of an occurrence is what it is an instance of: the referenced shape's name,
//! or, when the exporter only gave that shape a generic name such as `SOLID`, the nearest
//! enclosing occurrence with a real name. Every `bolt_1` of an assembly has its own key and
//! the same part. Pure functions over a tree; reading the GLB is the worker's job.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One node of the scene tree, as the exporter wrote it.
#[derive(Debug, Clone, Default)]
pub struct TreeNode {
    pub name: Option<String>,
    /// The name of the mesh this node instances, if it has geometry.
    pub mesh_name: Option<String>,
    pub has_mesh: bool,
    /// Indexes into the node list.
    pub children: Vec<usize>,
}

/// One occurrence with geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartOccurrence {
    /// Unique within the file, identical across exports of the same file.
    pub key: String,
    /// What it is an instance of (shared by every instance).
    pub part: String,
    /// The node's name as exported (for people; may be an OpenCASCADE label).
    pub name: String,
    /// Index of the glTF node.
    pub node: usize,
}

/// Shape-type names some exporters give every body; they say nothing about the part.
const GENERIC: &[&str] = &["SOLID", "COMPOUND", "COMPSOLID", "SHELL", "FACE", "WIRE", "EDGE", "VERTEX", "SHAPE", "MESH"];

fn is_label(name: &str) -> bool {
    name.starts_with("=>[")
}

fn is_generic(name: &str) -> bool {
    GENERIC.iter().any(|g| g.eq_ignore_ascii_case(name))
}

/// The name a node stands for: its own, or, for a label reference, the referenced shape's.
fn resolved_name(node: &TreeNode) -> String {
    let own = node.name.as_deref().map(str::trim).unwrap_or("");
    let name = if own.is_empty() || is_label(own) {
        node.mesh_name.as_deref().map(str::trim).filter(|m| !m.is_empty() && !is_label(m)).unwrap_or("node")
    } else {
        own
    };
    name.replace('/', "_")
}

/// Keys for every node with geometry under `roots`, in document order (depth first).
pub fn part_keys(nodes: &[TreeNode], roots: &[usize]) -> Vec<PartOccurrence> {
    let mut out = Vec::new();
    // (node, parent's key, nearest named part above, depth): an explicit stack, since CAD
    // trees can be deep and a cycle in a broken file must not recurse forever.
    let mut stack: Vec<(usize, String, Option<String>, usize)> = Vec::new();
    let push_level =
        |stack: &mut Vec<(usize, String, Option<String>, usize)>, level: &[usize], prefix: &str, part: Option<String>, depth: usize| {
            let segments = sibling_segments(nodes, level);
            for (&child, segment) in level.iter().zip(segments).rev() {
                let key = if prefix.is_empty() { segment } else { format!("{prefix}/{segment}") };
                stack.push((child, key, part.clone(), depth));
            }
        };
    push_level(&mut stack, roots, "", None, 0);
    while let Some((i, key, above, depth)) = stack.pop() {
        let Some(node) = nodes.get(i) else { continue };
        if depth > 256 {
            continue; // a cycle or an absurd depth: the exporter's tree is broken here
        }
        let name = resolved_name(node);
        // What this occurrence is an instance of: the referenced shape when it has a real
        // name; a node without geometry (an assembly) names the part for its children.
        let mesh = node.mesh_name.as_deref().filter(|m| !m.is_empty() && !is_label(m) && !is_generic(m));
        let own = node.name.as_deref().filter(|n| !n.is_empty() && !is_label(n) && !is_generic(n));
        if node.has_mesh {
            let part =
                mesh.map(str::to_string).or_else(|| above.clone()).or_else(|| own.map(str::to_string)).unwrap_or_else(|| name.clone());
            out.push(PartOccurrence { key: key.clone(), part, name: node.name.clone().unwrap_or_default(), node: i });
        }
        let named_here = own.map(str::to_string).or(above);
        push_level(&mut stack, &node.children, &key, named_here, depth + 1);
    }
    out
}

/// The key segment of each sibling: its resolved name, with `[n]` when the name repeats.
fn sibling_segments(nodes: &[TreeNode], level: &[usize]) -> Vec<String> {
    let names: Vec<String> = level.iter().map(|&i| nodes.get(i).map(resolved_name).unwrap_or_else(|| "node".into())).collect();
    let mut total: HashMap<&str, usize> = HashMap::new();
    for n in &names {
        *total.entry(n.as_str()).or_default() += 1;
    }
    // An indexed name must not collide with a sibling literally named that way
    // (`BOLT`, `BOLT`, `BOLT[1]`): the index skips to the next free one.
    let literal: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    names
        .iter()
        .map(|n| {
            if total[n.as_str()] == 1 {
                return n.clone();
            }
            let k = seen.entry(n.as_str()).or_default();
            loop {
                *k += 1;
                let candidate = format!("{n}[{k}]");
                if !literal.contains(candidate.as_str()) {
                    return candidate;
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, mesh: Option<&str>, children: &[usize]) -> TreeNode {
        TreeNode { name: Some(name.into()), mesh_name: mesh.map(String::from), has_mesh: mesh.is_some(), children: children.to_vec() }
    }

    #[test]
    fn named_instances_keep_their_names_and_share_the_part() {
        // as1-oc-214's shape: two bracket assemblies, each with bolt_1 under nut-bolt-assembly_1..2
        let nodes = vec![
            node("as1", None, &[1, 6]),
            node("l-bracket-assembly_1", None, &[2, 4]),
            node("nut-bolt-assembly_1", None, &[3]),
            node("bolt_1", Some("bolt"), &[]),
            node("nut-bolt-assembly_2", None, &[5]),
            node("bolt_1", Some("bolt"), &[]),
            node("l-bracket-assembly_2", None, &[7]),
            node("nut-bolt-assembly_1", None, &[8]),
            node("bolt_1", Some("bolt"), &[]),
        ];
        let keys = part_keys(&nodes, &[0]);
        let k: Vec<&str> = keys.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            k,
            [
                "as1/l-bracket-assembly_1/nut-bolt-assembly_1/bolt_1",
                "as1/l-bracket-assembly_1/nut-bolt-assembly_2/bolt_1",
                "as1/l-bracket-assembly_2/nut-bolt-assembly_1/bolt_1"
            ]
        );
        assert!(keys.iter().all(|p| p.part == "bolt"));
        assert_eq!(keys.iter().map(|p| p.node).collect::<Vec<_>>(), [3, 5, 8]);
    }

    #[test]
    fn labels_resolve_and_repeated_siblings_get_instance_indexes() {
        // as1_pe_203's shape: repeated unnamed-instance assemblies, leaves named by label
        let nodes = vec![
            node("AS1_PE_ASM", None, &[1, 4]),
            node("NUT_BOLT_ASSEMBLY", None, &[2]),
            node("BOLT", None, &[3, 7]),
            node("=>[0:1:1:11]", Some("SOLID"), &[]),
            node("NUT_BOLT_ASSEMBLY", None, &[5]),
            node("BOLT", None, &[6]),
            node("=>[0:1:1:11]", Some("SOLID"), &[]),
            node("=>[0:1:1:12]", Some("COMPOUND"), &[]),
        ];
        let keys = part_keys(&nodes, &[0]);
        let k: Vec<&str> = keys.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            k,
            [
                "AS1_PE_ASM/NUT_BOLT_ASSEMBLY[1]/BOLT/SOLID",
                "AS1_PE_ASM/NUT_BOLT_ASSEMBLY[1]/BOLT/COMPOUND",
                "AS1_PE_ASM/NUT_BOLT_ASSEMBLY[2]/BOLT/SOLID"
            ]
        );
        assert!(keys.iter().all(|p| p.part == "BOLT"), "{keys:?}");
        assert!(keys.iter().all(|p| !p.key.contains("=>[")));
    }

    #[test]
    fn slashes_and_missing_names_stay_unambiguous() {
        let nodes = vec![
            TreeNode { name: None, mesh_name: Some("a/b".into()), has_mesh: true, children: vec![] },
            TreeNode { name: Some("".into()), mesh_name: None, has_mesh: true, children: vec![] },
            TreeNode { name: None, mesh_name: None, has_mesh: true, children: vec![] },
        ];
        let keys = part_keys(&nodes, &[0, 1, 2]);
        let k: Vec<&str> = keys.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(k, ["a_b", "node[1]", "node[2]"]);
    }

    #[test]
    fn indexes_never_collide_with_literal_names() {
        let nodes = vec![node("BOLT", Some("m"), &[]), node("BOLT", Some("m"), &[]), node("BOLT[1]", Some("m"), &[])];
        let keys: Vec<String> = part_keys(&nodes, &[0, 1, 2]).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["BOLT[2]", "BOLT[3]", "BOLT[1]"]);
    }

    #[test]
    fn a_cyclic_tree_terminates() {
        let nodes = vec![node("a", Some("m"), &[1]), node("b", Some("m"), &[0])];
        let keys = part_keys(&nodes, &[0]);
        assert!(!keys.is_empty() && keys.len() < 1000);
    }
}
