# Doxygen input filter for the Markdown pages (FILTER_PATTERNS in Doxyfile.in): gives each heading that a link
# of the same page points at ("[the modern variant](#the-modern-variant)") the id GitHub derives from its text,
# as "{#the-modern-variant}", so the links GitHub follows resolve in Doxygen's pages too.  Only linked headings get
# one: ids are global in Doxygen, and two pages may have a heading of the same name.
FNR == 1 {
    # First read the whole page for the ids its links use.
    while ((getline line < FILENAME) > 0) {
        while (match(line, /\]\(#[A-Za-z0-9_-]+\)/)) {
            linked[substr(line, RSTART + 3, RLENGTH - 4)] = 1
            line = substr(line, RSTART + RLENGTH)
        }
    }
    close(FILENAME)
}
/^```/ { fenced = !fenced }
!fenced && /^#+ / {
    id = tolower($0)
    sub(/^#+ +/, "", id)
    gsub(/[^a-z0-9 _-]/, "", id)
    gsub(/ /, "-", id)
    if (id in linked) {
        print $0 " {#" id "}"
        next
    }
}
{ print }
