from fp_monitor.cli import main

raise SystemExit(main())
