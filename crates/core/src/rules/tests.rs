//! The rules' tests, through the public interface and the parts they name.

use super::eval::normalize_path;
use super::*;
use serde_json::{Map, Value, json};

fn args(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn action(rules: &Rules, tool: &str, arguments: Value) -> Action {
    rules.action(tool, &args(arguments))
}

#[test]
fn the_first_matching_rule_decides_and_unmatched_calls_are_allowed() {
    let rules = Rules::parse(
        "gate.rules",
        "# scratch writes are fine\n\
         allow write_file when path ~ \"/tmp/scratch/*\"\n\
         \n\
         ask write_file   # everything else\n\
         ask edit_*\n\
         deny move_file when source ~ \"/etc/*\"\n",
    )
    .unwrap();
    assert_eq!(action(&rules, "write_file", json!({"path": "/tmp/scratch/a/b.txt"})), Action::Allow);
    assert_eq!(action(&rules, "write_file", json!({"path": "/home/ada/notes.txt"})), Action::Ask);
    assert_eq!(action(&rules, "edit_file", json!({})), Action::Ask);
    assert_eq!(action(&rules, "move_file", json!({"source": "/etc/passwd"})), Action::Deny);
    assert_eq!(action(&rules, "move_file", json!({"source": "/home/x"})), Action::Allow);
    assert_eq!(action(&rules, "read_file", json!({"path": "/etc/passwd"})), Action::Allow);
    let verdict = rules.verdict("write_file", &args(json!({"path": "/x"})));
    assert_eq!(verdict.unwrap().origin, "gate.rules:4");
    let verdict = rules.verdict("write_file", &args(json!({"path": "/tmp/scratch/x"})));
    assert_eq!(verdict.unwrap().text, "allow write_file when path ~ \"/tmp/scratch/*\"");
    assert!(rules.verdict("read_file", &Map::new()).is_none());
}

#[test]
fn conditions_compare_json_numbers_globs_and_nested_arguments() {
    let rules = Rules::parse(
        "r",
        "ask transfer when amount > 100 and currency == \"USD\"\n\
         ask run_sql when query ~* \"*drop *\"\n\
         ask run_sql when options.force == true\n\
         ask edit_file when edits.0.newText exists\n\
         ask deploy when env != \"staging\"\n\
         ask tag when name !~ \"v*\"\n\
         ask retry when count <= 1.5 and count >= 1\n",
    )
    .unwrap();
    assert_eq!(action(&rules, "transfer", json!({"amount": 250, "currency": "USD"})), Action::Ask);
    assert_eq!(action(&rules, "transfer", json!({"amount": 250.0, "currency": "EUR"})), Action::Allow);
    assert_eq!(action(&rules, "transfer", json!({"amount": 100, "currency": "USD"})), Action::Allow);
    assert_eq!(action(&rules, "transfer", json!({"amount": "250", "currency": "USD"})), Action::Ask, "numeric text");
    assert_eq!(action(&rules, "run_sql", json!({"query": "DROP TABLE users"})), Action::Ask);
    assert_eq!(action(&rules, "run_sql", json!({"query": "select 1"})), Action::Allow);
    assert_eq!(action(&rules, "run_sql", json!({"query": "x", "options": {"force": true}})), Action::Ask);
    assert_eq!(action(&rules, "edit_file", json!({"edits": [{"newText": "a"}]})), Action::Ask);
    assert_eq!(action(&rules, "edit_file", json!({"edits": []})), Action::Allow);
    assert_eq!(action(&rules, "deploy", json!({})), Action::Ask, "!= holds when the argument is missing");
    assert_eq!(action(&rules, "deploy", json!({"env": "staging"})), Action::Allow);
    assert_eq!(action(&rules, "tag", json!({"name": "v1.2"})), Action::Allow);
    assert_eq!(action(&rules, "tag", json!({"name": "latest"})), Action::Ask);
    assert_eq!(action(&rules, "retry", json!({"count": 1})), Action::Ask);
    assert_eq!(action(&rules, "retry", json!({"count": 2})), Action::Allow);
}

#[test]
fn arguments_of_odd_types_are_asked_never_waved_through() {
    let rules = Rules::parse(
        "r",
        "allow transfer when amount <= 100\n\
         ask transfer\n\
         allow write_file when path ~ \"/srv/scratch/*\"\n\
         ask write_file\n\
         deny drop when table ~ \"prod_*\"\n",
    )
    .unwrap();
    assert_eq!(action(&rules, "transfer", json!({"amount": 5})), Action::Allow);
    assert_eq!(action(&rules, "transfer", json!({"amount": " 5 "})), Action::Allow, "numeric text is a number");
    assert_eq!(action(&rules, "transfer", json!({"amount": "five"})), Action::Ask);
    assert_eq!(action(&rules, "transfer", json!({"amount": [5]})), Action::Ask);
    assert_eq!(action(&rules, "transfer", json!({"amount": {"value": 5}})), Action::Ask);
    assert_eq!(action(&rules, "write_file", json!({"path": ["/srv/scratch/a"]})), Action::Ask);
    assert_eq!(action(&rules, "drop", json!({"table": {"name": "prod_users"}})), Action::Deny, "deny fails safe");
    assert_eq!(action(&rules, "drop", json!({"table": "dev_users"})), Action::Allow);
}

#[test]
fn absolute_paths_are_normalised_before_matching_an_absolute_glob() {
    let rules = Rules::parse(
        "r",
        "allow write_file when path ~ \"/srv/scratch/*\"\n\
         ask write_file\n\
         deny move_file when source ~ \"/etc/*\"\n",
    )
    .unwrap();
    let write = |path: &str| action(&rules, "write_file", json!({"path": path}));
    assert_eq!(write("/srv/scratch/a/b.txt"), Action::Allow);
    assert_eq!(write("/srv/scratch/./a.txt"), Action::Allow);
    assert_eq!(write("/srv/scratch/../secret.txt"), Action::Ask);
    assert_eq!(write("/srv/scratch/a/../../../etc/passwd"), Action::Ask);
    assert_eq!(write("/srv//scratch/x"), Action::Allow);
    assert_eq!(write("srv/scratch/x"), Action::Ask, "a relative path never matches an absolute glob");
    let mv = |source: &str| action(&rules, "move_file", json!({"source": source}));
    assert_eq!(mv("//etc/passwd"), Action::Deny);
    assert_eq!(mv("/./etc/passwd"), Action::Deny);
    assert_eq!(mv("/tmp/../etc/shadow"), Action::Deny);
    assert_eq!(mv("/home/etc/x"), Action::Allow);
    assert_eq!(normalize_path("/a/b/"), "/a/b/");
    assert_eq!(normalize_path("/.."), "/");
    assert_eq!(normalize_path("a/../b"), "a/../b");
}

#[test]
fn globs_work_on_characters_and_ignore_case_across_unicode() {
    let rules = Rules::parse(
        "r",
        "ask note when title ~* \"*été*\"\n\
         ask tag when name ~ \"caf?\"\n\
         ask copy when dest ~ \"C:\\\\Windows\\\\*\"\n\
         ask find when id ~ \"4*\"\n",
    )
    .unwrap();
    assert_eq!(action(&rules, "note", json!({"title": "Un ÉTÉ chaud"})), Action::Ask);
    assert_eq!(action(&rules, "note", json!({"title": "hiver"})), Action::Allow);
    assert_eq!(action(&rules, "tag", json!({"name": "café"})), Action::Ask, "? is one character");
    assert_eq!(action(&rules, "tag", json!({"name": "cafés"})), Action::Allow);
    assert_eq!(action(&rules, "copy", json!({"dest": "C:\\Windows\\system32"})), Action::Ask, "\\ is literal");
    assert_eq!(action(&rules, "find", json!({"id": 42})), Action::Ask, "numbers match as their JSON text");
}

#[test]
fn equality_reads_numbers_exactly_and_text_as_lenient_servers_do() {
    let rules = Rules::parse(
        "r",
        "ask a when n == 9007199254740993\n\
         ask b when force == true\n\
         ask c when n == 1\n",
    )
    .unwrap();
    assert_eq!(action(&rules, "a", json!({"n": 9007199254740993u64})), Action::Ask);
    assert_eq!(action(&rules, "a", json!({"n": 9007199254740992u64})), Action::Allow);
    assert_eq!(action(&rules, "b", json!({"force": "true"})), Action::Ask);
    assert_eq!(action(&rules, "b", json!({"force": "false"})), Action::Allow);
    assert_eq!(action(&rules, "c", json!({"n": 1.0})), Action::Ask);
    assert_eq!(action(&rules, "c", json!({"n": "1"})), Action::Ask);
    assert_eq!(action(&rules, "c", json!({"n": "\"1\""})), Action::Allow);
}

#[test]
fn comments_end_words_and_a_byte_order_mark_is_ignored() {
    let rules = Rules::parse("r", "\u{feff}ask write_file# the only rule\n").unwrap();
    assert_eq!(action(&rules, "write_file", json!({})), Action::Ask);
    let rules = Rules::parse("r", "ask edit when items.01 exists\n").unwrap();
    assert_eq!(action(&rules, "edit", json!({"items": [0, 1]})), Action::Ask);
    let rules = Rules::parse("r", "ask edit when items.+1 exists\n").unwrap();
    assert_eq!(action(&rules, "edit", json!({"items": [0, 1]})), Action::Allow, "only digits index arrays");
}

#[test]
fn strings_take_json_escapes_and_hash_inside_quotes_is_not_a_comment() {
    let rules = Rules::parse("r", "ask post when body == \"a \\\"quoted\\\" #1\\n\"  # comment\n").unwrap();
    assert_eq!(action(&rules, "post", json!({"body": "a \"quoted\" #1\n"})), Action::Ask);
    assert_eq!(action(&rules, "post", json!({"body": "a"})), Action::Allow);
}

#[test]
fn ask_everything_asks_for_every_tool() {
    let rules = Rules::ask_everything();
    assert_eq!(action(&rules, "anything", json!({})), Action::Ask);
    assert_eq!(action(&Rules::default(), "anything", json!({})), Action::Allow);
}

fn error(text: &str) -> RulesError {
    Rules::parse("gate.rules", text).unwrap_err()
}

#[test]
fn errors_name_the_line_and_say_what_is_wrong() {
    let e = error("ask write_file\n\n  aks edit_file\n");
    assert_eq!(e.line, 3);
    assert!(e.to_string().starts_with("gate.rules:3: unknown action `aks`"), "{e}");
    assert!(e.to_string().contains("3 |   aks edit_file"), "{e}");

    let cases = [
        ("ask", "needs a tool name"),
        ("ask write_file if path == \"x\"", "expected `when`"),
        ("ask write_file when", "a condition is missing"),
        ("ask write_file when path", "needs an operator"),
        ("ask write_file when path = \"x\"", "unknown operator `=`"),
        ("ask write_file when path == x", "write text in double quotes"),
        ("ask write_file when path ~ 3", "takes a glob in double quotes"),
        ("ask write_file when size > \"big\"", "compares numbers"),
        ("ask write_file when path == \"x\" or path == \"y\"", "write another rule"),
        ("ask write_file when path == \"x", "closing double quote"),
        ("ask write_[file", "bad glob"),
        ("ask t when path~\"x\"", "put spaces around operators, e.g. `path ~ ...`"),
        ("ask t when n==1", "put spaces around operators, e.g. `n == ...`"),
        ("ask t when a..b exists", "not an argument name"),
    ];
    for (line, expected) in cases {
        let e = error(line);
        assert_eq!(e.line, 1, "{line}");
        assert!(e.message.contains(expected), "{line}: {e}");
    }
}

#[test]
fn relative_globs_and_negations_that_allow_missing_arguments_are_warned_about() {
    let rules = Rules::parse(
        "rules.txt",
        "allow write_file when path ~ \"/srv/scratch/*\"\n\
         allow write_file when path ~ \"scratch/*\"\n\
         # a comment\n\
         allow deploy when env != \"production\"\n\
         allow deploy when env exists and env != \"production\"\n\
         ask deploy when env != \"staging\"\n\
         deny read_file when path ~* \"~/.ssh/*\"\n\
         allow tag when name !~ \"v*\" and force == false\n\
         ask run_sql when query ~* \"*drop *\"\n\
         ask *\n",
    )
    .unwrap();
    let warnings: Vec<(usize, &str)> = rules.warnings().iter().map(|w| (w.line, w.message.as_str())).collect();
    assert_eq!(warnings.iter().map(|w| w.0).collect::<Vec<_>>(), [2, 4, 7, 8], "{warnings:#?}");
    let [relative, negation, home, tag] = &warnings[..] else { unreachable!() };
    assert!(relative.1.starts_with("`path ~ \"scratch/*\"`: the glob is a relative path"), "{}", relative.1);
    assert!(relative.1.contains("\"scratch/../../etc/passwd\" matches"), "{}", relative.1);
    assert!(relative.1.contains("\"/absolute/path/to/scratch/*\""), "{}", relative.1);
    assert!(negation.1.starts_with("`env != \"production\"` also holds when a call has no `env` argument"));
    assert!(negation.1.contains("`env exists and env != \"production\"`"), "{}", negation.1);
    assert!(home.1.contains("starts with `~`, which is not expanded") && home.1.contains("\"/home/you/.ssh/*\""));
    assert!(tag.1.contains("no `name` argument"), "{}", tag.1);
    assert_eq!(rules.warnings()[0].to_string(), format!("rules.txt:2: {}", relative.1));
    // The claims hold: the relative glob passes a path out of its directory, and the negation
    // allows a call without the argument.
    assert_eq!(action(&rules, "write_file", json!({"path": "scratch/../../etc/passwd"})), Action::Allow);
    assert_eq!(action(&rules, "deploy", json!({})), Action::Allow);
    assert!(Rules::parse("r", "ask write_file\nallow x when a == 1\n").unwrap().warnings().is_empty());
    assert!(Rules::ask_everything().warnings().is_empty());
}
