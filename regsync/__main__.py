from regsync.cli import main

raise SystemExit(main())
