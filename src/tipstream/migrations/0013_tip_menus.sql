-- Tip menus: a performer's priced items ("Dance 50", "Song request 100") that viewers tip with
-- one click in the room. One menu per performer, shown in every stream of theirs; the menu is
-- replaced as a whole, so position is simply the item's place in the list.
CREATE TABLE tip_menu_items (
    performer_id  bigint   NOT NULL REFERENCES users (id),
    position      smallint NOT NULL CHECK (position BETWEEN 0 AND 49),
    label         text     NOT NULL CHECK (char_length(label) BETWEEN 1 AND 60),
    tokens        bigint   NOT NULL CHECK (tokens BETWEEN 1 AND 1000000000),
    PRIMARY KEY (performer_id, position)
);

-- The same label twice in one menu would be two prices for one thing.
CREATE UNIQUE INDEX tip_menu_items_label_idx ON tip_menu_items (performer_id, lower(label));
