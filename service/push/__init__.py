"""Push providers behind one interface; only generic words ever reach a lock screen."""
