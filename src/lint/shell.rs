//! Just enough of a shell lexer to tell code lines from content lines.

/// Just enough of a shell lexer to tell code lines from content lines:
/// quotes that stay open across lines, comments, and heredocs.
#[derive(Debug, Default)]
pub(super) struct ShellScan {
    pub(super) in_single: bool,
    pub(super) in_double: bool,
    /// Delimiters of heredocs whose bodies are still to come, in order.
    pub(super) heredocs: std::collections::VecDeque<String>,
}

impl ShellScan {
    pub(super) fn line(&mut self, line: &str) {
        if let Some(end) = self.heredocs.front() {
            // `<<-` bodies may indent the delimiter with tabs.
            if line.trim_start_matches('\t') == end {
                self.heredocs.pop_front();
            }
            return;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut arithmetic = 0usize;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if self.in_single {
                if c == '\'' {
                    self.in_single = false;
                }
            } else if self.in_double {
                match c {
                    '\\' => i += 1,
                    '"' => self.in_double = false,
                    _ => {}
                }
            } else {
                match c {
                    '\\' => i += 1,
                    '\'' => self.in_single = true,
                    '"' => self.in_double = true,
                    '#' if i == 0 || chars[i - 1].is_whitespace() || chars[i - 1] == ';' => break,
                    '(' if next == Some('(') => {
                        arithmetic += 1;
                        i += 1;
                    }
                    ')' if next == Some(')') && arithmetic > 0 => {
                        arithmetic -= 1;
                        i += 1;
                    }
                    '<' if next == Some('<') && arithmetic == 0 => {
                        if chars.get(i + 2) == Some(&'<') {
                            i += 3; // here-string
                            continue;
                        }
                        let (word, len) = heredoc_word(&chars[i + 2..]);
                        if let Some(word) = word {
                            self.heredocs.push_back(word);
                        }
                        i += 2 + len;
                        continue;
                    }
                    _ => {}
                }
            }
            i += 1;
        }
    }
}

/// The delimiter after `<<` (quotes and backslashes removed, as the shell
/// compares it) and how many characters it took.
fn heredoc_word(rest: &[char]) -> (Option<String>, usize) {
    let mut i = 0;
    if rest.first() == Some(&'-') {
        i += 1;
    }
    while rest.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
        i += 1;
    }
    let mut word = String::new();
    let mut quote: Option<char> = None;
    while let Some(&c) = rest.get(i) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '\\' => {}
            None if c.is_whitespace() || ";&|<>()".contains(c) => break,
            None => word.push(c),
        }
        i += 1;
    }
    ((!word.is_empty()).then_some(word), i)
}

#[cfg(test)]
pub(super) fn heredoc_delimiter(line: &str) -> Option<String> {
    let mut scan = ShellScan::default();
    scan.line(line);
    scan.heredocs.pop_front()
}
