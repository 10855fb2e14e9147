//! What a logged DDL statement means for replication, where the row stream alone cannot tell.
//!
//! Column changes need no parsing: the next table map describes the new shape. A renamed table
//! does: its rows continue under a new name, and only the statement says the two are one table.
//! This is a tokenizer, not a SQL parser: it understands identifiers (plain, backquoted, qualified),
//! string literals and comments well enough to find `RENAME TABLE a TO b, ...` and
//! `ALTER TABLE a ... RENAME [TO|AS] b`, and returns nothing for anything else.

use crate::event::TableId;

/// The tables `statement` renames, as (old, new), in statement order; unqualified names belong
/// to `namespace`, the database the statement ran in.
pub fn renamed_tables(statement: &str, namespace: &str) -> Vec<(TableId, TableId)> {
    let tokens = tokenize(statement);
    let mut t = Cursor {
        tokens: &tokens,
        at: 0,
    };
    if t.keyword("RENAME") {
        if !(t.keyword("TABLE") || t.keyword("TABLES")) {
            return Vec::new();
        }
        t.keywords(&["IF", "EXISTS"]);
        let mut renames = Vec::new();
        loop {
            let Some(from) = t.table_name(namespace) else {
                return renames;
            };
            t.keywords(&["WAIT"]);
            if !t.keyword("TO") {
                return renames;
            }
            let Some(to) = t.table_name(namespace) else {
                return renames;
            };
            renames.push((from, to));
            if !t.symbol(',') {
                return renames;
            }
        }
    }
    if t.keyword("ALTER") {
        t.keyword("ONLINE");
        t.keyword("IGNORE");
        if !t.keyword("TABLE") {
            return Vec::new();
        }
        t.keywords(&["IF", "EXISTS"]);
        let Some(from) = t.table_name(namespace) else {
            return Vec::new();
        };
        let mut depth = 0usize;
        while let Some(token) = t.next() {
            match token {
                Token::Symbol('(') => depth += 1,
                Token::Symbol(')') => depth = depth.saturating_sub(1),
                Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case("RENAME") => {
                    if t.keyword("COLUMN") || t.keyword("INDEX") || t.keyword("KEY") {
                        continue;
                    }
                    let _ = t.keyword("TO") || t.keyword("AS");
                    if let Some(to) = t.table_name(namespace) {
                        return vec![(from, to)];
                    }
                    return Vec::new();
                }
                _ => {}
            }
        }
    }
    Vec::new()
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A bare word: keyword or unquoted identifier.
    Word(String),
    /// A backquoted identifier, unescaped.
    Quoted(String),
    /// A string literal (content not kept).
    Literal,
    /// Any other single character.
    Symbol(char),
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '`' => {
                let mut ident = String::new();
                while let Some((_, c)) = chars.next() {
                    if c == '`' {
                        if chars.peek().is_some_and(|&(_, n)| n == '`') {
                            chars.next();
                            ident.push('`');
                        } else {
                            break;
                        }
                    } else {
                        ident.push(c);
                    }
                }
                tokens.push(Token::Quoted(ident));
            }
            '\'' | '"' => {
                let quote = c;
                while let Some((_, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == quote {
                        if chars.peek().is_some_and(|&(_, n)| n == quote) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                tokens.push(Token::Literal);
            }
            '-' if text[start..].starts_with("-- ") => skip_line(&mut chars),
            '#' => skip_line(&mut chars),
            '/' if text[start..].starts_with("/*") => {
                chars.next();
                let mut prev = ' ';
                for (_, c) in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, n)) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' || n == '$' {
                        end = i + n.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(text[start..end].to_owned()));
            }
            c => tokens.push(Token::Symbol(c)),
        }
    }
    tokens
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) {
    for (_, c) in chars.by_ref() {
        if c == '\n' {
            break;
        }
    }
}

struct Cursor<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Option<&Token> {
        let token = self.tokens.get(self.at)?;
        self.at += 1;
        Some(token)
    }

    /// Consumes the bare word `word` (any case) if it is next.
    fn keyword(&mut self, word: &str) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(word) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    /// Consumes `words` if they all come next in this order; a `WAIT n` takes its number too.
    fn keywords(&mut self, words: &[&str]) {
        let start = self.at;
        for word in words {
            if !self.keyword(word) {
                self.at = start;
                return;
            }
        }
        if words == ["WAIT"] {
            self.next();
        }
    }

    fn symbol(&mut self, symbol: char) -> bool {
        if self.tokens.get(self.at) == Some(&Token::Symbol(symbol)) {
            self.at += 1;
            return true;
        }
        false
    }

    fn identifier(&mut self) -> Option<String> {
        match self.tokens.get(self.at)? {
            Token::Word(w) | Token::Quoted(w) => {
                let w = w.clone();
                self.at += 1;
                Some(w)
            }
            _ => None,
        }
    }

    /// `name` or `db.name`, each part plain or backquoted.
    fn table_name(&mut self, namespace: &str) -> Option<TableId> {
        let first = self.identifier()?;
        if self.symbol('.') {
            let second = self.identifier()?;
            return Some(TableId::new(first, second));
        }
        Some(TableId::new(namespace, first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(db: &str, t: &str) -> TableId {
        TableId::new(db, t)
    }

    #[test]
    fn rename_table_statements() {
        assert_eq!(
            renamed_tables("RENAME TABLE a TO b", "shop"),
            vec![(id("shop", "a"), id("shop", "b"))]
        );
        assert_eq!(
            renamed_tables(
                "/* gh-ost */ rename table `shop`.`t` to `shop`.`_t_del`, `_t_gho` TO t",
                "shop"
            ),
            vec![
                (id("shop", "t"), id("shop", "_t_del")),
                (id("shop", "_t_gho"), id("shop", "t")),
            ]
        );
        assert_eq!(
            renamed_tables("RENAME TABLE IF EXISTS `we``ird` WAIT 5 TO x.y", "d"),
            vec![(id("d", "we`ird"), id("x", "y"))]
        );
    }

    #[test]
    fn alter_table_rename_clauses() {
        assert_eq!(
            renamed_tables("ALTER TABLE a RENAME TO b", "s"),
            vec![(id("s", "a"), id("s", "b"))]
        );
        assert_eq!(
            renamed_tables(
                "ALTER TABLE s.a ADD COLUMN c INT COMMENT 'rename to z', RENAME AS s2.b",
                "s"
            ),
            vec![(id("s", "a"), id("s2", "b"))]
        );
        assert_eq!(
            renamed_tables("alter table a rename b", "s"),
            vec![(id("s", "a"), id("s", "b"))]
        );
    }

    #[test]
    fn other_renames_and_statements_are_not_table_renames() {
        for text in [
            "ALTER TABLE a RENAME COLUMN x TO y",
            "ALTER TABLE a RENAME INDEX i TO j",
            "ALTER TABLE a ADD COLUMN c INT DEFAULT 'RENAME TO b'",
            "CREATE TABLE rename_log (id INT)",
            "RENAME USER a TO b",
            "DROP TABLE a",
            "ALTER TABLE",
            "RENAME TABLE a",
            "",
        ] {
            assert_eq!(renamed_tables(text, "s"), vec![], "{text}");
        }
    }
}
