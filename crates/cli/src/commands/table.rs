//! Aligned plain-text tables for listing commands, optionally styled for a colour terminal.

/// Picks the ANSI style of a body cell from its column index and text (`None`: unstyled).
pub type CellStyle<'a> = &'a dyn Fn(usize, &str) -> Option<&'static str>;

const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Prints a header and rows, columns padded to their widest cell.
pub fn print(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    print!("{}", render(header, &rows, None));
}

/// The table as text, one line per row. With `style`, the header is bold and cells get their
/// style; widths count only the visible text, so columns stay aligned.
pub fn render(header: &[&str], rows: &[Vec<String>], style: Option<CellStyle<'_>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<(&str, Option<&str>)>| {
        let mut text = String::new();
        for (i, ((cell, ansi), w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            match ansi {
                Some(ansi) if !cell.is_empty() => text.push_str(&format!("{ansi}{cell}{RESET}")),
                _ => text.push_str(cell),
            }
            text.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| (*h, style.map(|_| BOLD))).collect());
    for row in rows {
        line(row.iter().enumerate().map(|(i, c)| (c.as_str(), style.and_then(|s| s(i, c)))).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_visible_text_with_or_without_styles() {
        let rows = vec![
            vec!["a".to_owned(), "approval".to_owned(), "x".to_owned()],
            vec!["long-id".to_owned(), "question".to_owned(), String::new()],
        ];
        let plain = render(&["ID", "KIND", "WHAT"], &rows, None);
        assert_eq!(plain, "ID       KIND      WHAT\na        approval  x\nlong-id  question\n");
        let kind: CellStyle<'_> = &|col, _| (col == 1).then_some("\x1b[33m");
        let styled = render(&["ID", "KIND", "WHAT"], &rows, Some(kind));
        let stripped = styled.replace("\x1b[1m", "").replace("\x1b[33m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
        assert!(styled.starts_with("\x1b[1mID\x1b[0m"));
    }
}
